"""``python -m schemas``: print every table's rules as markdown (for docs/validation.md)."""

from schemas import rules_markdown

print(rules_markdown(), end="")
