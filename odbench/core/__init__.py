"""Contracts, seeding, metrics and file fetching: what every other layer stands on."""
