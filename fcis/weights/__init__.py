"""Trained weights from elsewhere: reading the official FCIS (MXNet ``.params``) and ChainerCV
(``.npz``) files, converting them into fcis checkpoints, and initialising a training run from a
checkpoint (``fcis train --init-from``)."""
