"""Demo actors that show supervision at work (ticker, flaky workers, tally)."""
