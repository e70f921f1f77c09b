"""Model analysis: FLOP counting that includes the selective scan."""
