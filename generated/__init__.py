"""Everything emitted by ``make codegen``. Never edit by hand."""
