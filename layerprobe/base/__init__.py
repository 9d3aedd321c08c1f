"""What every stage shares: whole-or-nothing files, recorded seeds, the device, the plain metrics."""
