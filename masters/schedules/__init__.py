"""Restore schedules: training progress -> mask ratio, over a finite set of levels."""
