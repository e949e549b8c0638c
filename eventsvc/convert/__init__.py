"""`eventsvc convert`: other tools' manifests in, eventsvc spec files out.

`argo.py` converts Argo Events Sensors and EventSources. Whatever has no eventsvc
counterpart is never dropped silently: it becomes a `# eventsvc: not converted: why`
comment where it was, a `file:line: field: why` line on stderr, and exit 1.
"""
