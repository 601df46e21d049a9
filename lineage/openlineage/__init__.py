"""Lineage in the open: OpenLineage run events from every job and a W3C PROV export of a chain.

`events` builds the events (the official `openlineage-python` classes, standard facets where
they exist, our documented `modelLineage` facets otherwise), `emit` sends them the standard
way (OPENLINEAGE_URL / OPENLINEAGE_CONFIG / OPENLINEAGE__TRANSPORT__*; off when unset) with a
bounded attempt and keeps each one for replay, `prov` turns a verified chain into a PROV
document and draws it.
"""
