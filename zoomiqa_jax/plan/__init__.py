"""`zoomiqa plan`: AOT compilation of a run's programs for a named TPU topology, on any machine.

topology (the slice, by libtpu), shapes (abstract model state and batches), programs (compile and measure), cli.
"""
