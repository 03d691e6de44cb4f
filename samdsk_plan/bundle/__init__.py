"""Bundle: MONAI bundle folders emitted from a plan, and the components their configs name
(``components``: losses; ``handlers``: evaluation report; ``data``: data lists)."""

from samdsk_plan.bundle.emit import bundle_files, emit_bundle

__all__ = ["bundle_files", "emit_bundle"]
