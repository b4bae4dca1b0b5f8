"""The core of the harvest framework; actions and faces call into it."""
