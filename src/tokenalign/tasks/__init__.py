"""tokenalign.tasks."""
