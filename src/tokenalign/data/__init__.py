"""Data formats, loaders with validation, truncation and edit-diff token labels."""

from tokenalign.data.edit_labels import EditLabelConfig, TokenLabels, edit_labels
from tokenalign.data.loading import LoadResult, load_prompts, load_records
from tokenalign.data.records import (
    RECORD_TYPES,
    EditRecord,
    PairRecord,
    PromptRecord,
    RankedRecord,
    Record,
    SupervisedRecord,
    TextRecord,
)
from tokenalign.data.truncation import TruncationCounter, truncate_pair

__all__ = [
    "load_prompts",
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
    "Record",
    "RECORD_TYPES",
    "TruncationCounter",
    "truncate_pair",
]
