"""The Docker deploy target: wheels resolved on the host (``wheels``), a build context rendered from
``Dockerfile.template`` (``context``), the ``docker`` command line (``client``), and the build (``build``)."""
