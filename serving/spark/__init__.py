"""The Spark deploy target: ``spark_udf`` (``udf``) and the Spark <-> pandas type mapping (``types``)."""

from modelfmt.serving.spark.udf import ModelUDF, spark_udf

__all__ = ["spark_udf", "ModelUDF"]
