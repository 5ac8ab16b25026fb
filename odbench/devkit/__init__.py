"""For plugin authors: contract checks, skeleton templates, tiny test data."""
