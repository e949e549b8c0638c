# eventsvc image: `docker build -t REGISTRY/eventsvc:VERSION .` (see README, "Install in a cluster").
# Two stages: the first builds a virtualenv, the second copies it onto a clean base that
# has no compiler, no pip cache and no build files. The base is pinned by exact tag;
# pin it by digest too (python:3.11.13-slim-bookworm@sha256:...) where your policy asks.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/eventsvc
COPY pyproject.toml ./
COPY eventsvc ./eventsvc
# a regular (not editable) install: the final stage gets no source tree
RUN /opt/eventsvc/bin/pip install --no-cache-dir . \
    && /opt/eventsvc/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# git: the promotion trigger clones and pushes deployment repositories.
# Versions are not pinned on purpose: Debian drops superseded package versions from
# the archive, so a pin would break rebuilds; the base image tag is the pin, and
# security updates of git should flow in with each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 eventsvc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin eventsvc \
    && install -d -o 10001 -g 10001 /var/lib/eventsvc /etc/eventsvc/sensors
COPY --from=build /opt/eventsvc /opt/eventsvc
# no EVENTSVC_* defaults here: environment variables override the config file, so an
# image default would silently win over the ConfigMap. Without a config the service
# keeps its state under ./.eventsvc, i.e. in the writable working directory.
ENV PATH=/opt/eventsvc/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /var/lib/eventsvc
# numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd
USER 10001:10001
EXPOSE 12000
ENTRYPOINT ["eventsvc"]
# a container is reached from outside its own loopback; /events then needs a token
CMD ["run", "--host", "0.0.0.0"]
