"""The Docker deploy target: wheels resolved on the host (:mod:`modelfmt.envs.wheels`, re-exported as
``wheels``), a build context rendered from ``Dockerfile.template`` (``context``), the ``docker`` command
line (``client``), and the build (``build``)."""
