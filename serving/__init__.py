"""Deploy targets: the REST scoring server, the Spark UDF and the Docker image."""
