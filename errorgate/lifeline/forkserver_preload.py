"""Imported only by the forkservers errorgate starts (multiprocessing's forkserver preload, see
``errorgate.lifeline.forkserver_context``): the server is SIGKILLed by the kernel when the thread
that started it ends — a thread that lives as long as the process that asked for the server.
A forkserver otherwise lives until its last client is gone, and its clients include the workers
it forked, which wait for nothing from it: nothing would end the chain from this end."""

from errorgate.lifeline import die_with_parent

die_with_parent()
