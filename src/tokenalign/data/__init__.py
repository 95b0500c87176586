"""Data formats, loaders with validation, truncation and edit-diff token labels."""

from tokenalign.data.edit_labels import EditLabelConfig, TokenLabels, edit_labels
from tokenalign.data.loading import LoadResult, load_records
from tokenalign.data.records import (
    EditRecord,
    PairRecord,
    PromptRecord,
    RankedRecord,
    SupervisedRecord,
    TextRecord,
)

__all__ = [
    "EditLabelConfig",
    "TokenLabels",
    "edit_labels",
    "LoadResult",
    "load_records",
    "PairRecord",
    "RankedRecord",
    "EditRecord",
    "PromptRecord",
    "SupervisedRecord",
    "TextRecord",
]
