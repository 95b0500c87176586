"""Automatic minimal editors (autopep8 for the pep8 task)."""

from tokenalign.editors.base import EditResult, Editor, edit_minimality, summarize_edits

__all__ = ["EditResult", "Editor", "edit_minimality", "summarize_edits"]
