"""Exporters: a model written out as a project that builds without Ember."""
from ember.export.embedded import build_project, export_model

__all__ = ["export_model", "build_project"]
