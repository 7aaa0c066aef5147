"""The optasia_etl_pipeline Spark job: contract rules, store, publish, data generator."""
