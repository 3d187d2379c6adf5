"""Delivery: a reminder's life from claim to receipt, the sweeper, and the transports."""
