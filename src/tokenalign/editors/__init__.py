"""Automatic minimal editors (autopep8 for the pep8 task).

``EDITORS`` names the built-in editors; :func:`make_editor` turns a config value (a
registered name or ``package.module:attribute``) into an editor.
"""

from tokenalign.editors.base import EDITORS, EditResult, Editor, edit_minimality, make_editor, register_editor, summarize_edits

__all__ = ["EDITORS", "EditResult", "Editor", "edit_minimality", "make_editor", "register_editor", "summarize_edits"]
