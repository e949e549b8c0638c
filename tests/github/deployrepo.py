"""A deployment repository in a temp dir: a bare repo (`file://` URL) with overlays."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

STAGING = """\
# staging overlay: image tags are bumped by promotion pull requests
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base  # shared manifests
images:
  - name: ghcr.io/acme/shop
    newTag: "1.4.0"  # staging runs ahead of production
  - name: ghcr.io/acme/worker
    newTag: 2.0.1
"""
PRODUCTION = STAGING.replace("staging", "production").replace('"1.4.0"', '"1.3.2"')
VALUES = """\
replicaCount: 2
image:
  repository: ghcr.io/acme/shop  # the registry
  tag: 1.4.0
"""
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=ENV,
                         check=True)  # fmt: skip
    return out.stdout


def make_deploy_repo(root: Path, env_branches: bool = True) -> tuple[Path, str]:
    """(bare repo path, file:// URL): `main` with overlays/{staging,production} and a
    chart, plus `staging` and `production` branches (branch per environment)."""
    bare = root / "deploy.git"
    work = root / "seed"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "init", "-q", "-b", "main", str(work))
    files = {
        "overlays/staging/kustomization.yaml": STAGING,
        "overlays/production/kustomization.yaml": PRODUCTION,
        "charts/shop/values.yaml": VALUES,
        "kustomization.yaml": STAGING,  # the root file on environment branches
    }
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "push", "-q", str(bare), "main")
    if env_branches:
        git(work, "push", "-q", str(bare), "main:staging")
        (work / "kustomization.yaml").write_text(PRODUCTION)
        git(work, "commit", "-q", "-am", "production")
        git(work, "push", "-q", str(bare), "HEAD:production")
    return bare, bare.resolve().as_uri()


def show(bare: Path, rev: str, path: str) -> str:
    return git(bare, "show", f"{rev}:{path}")


def commit_to(bare: Path, root: Path, branch: str, path: str, text: str) -> None:
    """Someone else commits to `branch` (e.g. the target moves under a promotion)."""
    work = root / f"other-{branch}"
    if not work.exists():
        git(root, "clone", "-q", "-b", branch, str(bare), str(work))
    git(work, "pull", "-q")
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(text)
    git(work, "commit", "-q", "-am", f"edit {path}")
    git(work, "push", "-q", "origin", branch)
