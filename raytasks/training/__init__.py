"""Training: settings, the Ray Train loop over Ray Data, boosted trees."""
