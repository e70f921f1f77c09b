"""Structured pruning: groups of parameter slices that form removable units, and the export that removes them."""
from .export import apply_pruned_widths, export_pruned, widths_of
from .structure import (
    GROUP_KINDS,
    Member,
    StructuredGroup,
    dead_units,
    masked_units,
    member_slice,
    structured_groups,
)

__all__ = ['GROUP_KINDS', 'Member', 'StructuredGroup', 'apply_pruned_widths', 'dead_units', 'export_pruned',
           'masked_units', 'member_slice', 'structured_groups', 'widths_of']
