"""Helpers of the ``sample`` processor: consistent probability sampling (W3C ``ot=th``) and flood control."""
