"""Automatic minimal editors (autopep8 for the pep8 task)."""

from tokenalign.editors.base import EditResult, Editor

__all__ = ["EditResult", "Editor"]
