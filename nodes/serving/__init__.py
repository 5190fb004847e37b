"""What every socket server shares: restartable serving threads, refusals, request ids."""
