"""Scaling out on Ray: generation jobs on a pool of Ray actors (``--ray``).

The world never learns of Ray. Its job runner (:mod:`runtime.world.frontier.runner`) keeps
the priority queue, the in-flight bound, cancellation and ``apply``; it calls a
:class:`runtime.world.generators.Generator` on its worker threads. With ``--ray`` that
generator is a :class:`.pool.RayGenerator`: it sends the request (which already carries
cameras, caption, retrieved frames and the start image, so actors stay stateless) to an
actor of an :class:`.pool.ActorPool`, waits for the answer on the world's worker thread
(never on the server's event loop), forwards cancellation and retries on another actor
when one dies. :mod:`.actor` is the code that runs inside each actor.

Ray is optional (the ``ray`` extra): nothing here imports it until a pool is made.
"""
