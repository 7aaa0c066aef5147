"""The naive Spark baseline of `make bench-etl`: the floor Spark sets here.

What a plain PySpark job would do with the same files, and nothing more:
read both CSV files, apply the four transaction rules (timestamp, sub_id,
amount, channel) and the subscriber rules, drop exact duplicates, join the
transactions with the batch's subscribers, write one Parquet dataset. No
store, no pending table, no rejects dataset, no metrics, no read-back, no
quoting rules beyond Spark's CSV reader: it is *not* the contract, only the
cost of reading, validating, shuffling, joining and writing these rows.

    python benchmarks/naive_spark.py LANDING BATCH_ID OUTPUT_DIR [--master local[*]]

Prints one JSON line: {"published": n, "seconds": {...}}.
"""

from __future__ import annotations

import argparse
import json
import time

SUB_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TIMESTAMP = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
             r"(Z|[+-][0-9]{2}:[0-9]{2})?$")
AMOUNT = r"^[0-9]{1,14}(\.[0-9]{1,4})?$"
CHANNELS = ["SMS", "USSD", "APP", "WEB"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("landing")
    ap.add_argument("batch_id")
    ap.add_argument("output")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master(args.master).appName("naive_baseline")
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    t_session = time.monotonic()
    base = f"{args.landing.rstrip('/')}/{args.batch_id}"
    batch_date = args.batch_id[:10]

    subs = (spark.read.csv(f"{base}/subscribers.csv", schema="sub_id string, activation_date string",
                           ignoreLeadingWhiteSpace=True, ignoreTrailingWhiteSpace=True)
            .where(F.col("sub_id").rlike(SUB_ID))
            .withColumn("activation_date", F.try_to_date("activation_date", "yyyy-MM-dd"))
            .where(F.col("activation_date").isNotNull() & (F.col("activation_date") <= F.lit(batch_date)))
            .groupBy("sub_id").agg(F.min("activation_date").alias("activation_date")))
    txs = (spark.read.csv(f"{base}/transactions.csv",
                          schema="ts string, sub_id string, amount string, channel string",
                          ignoreLeadingWhiteSpace=True, ignoreTrailingWhiteSpace=True)
           .where(F.col("ts").rlike(TIMESTAMP) & F.col("sub_id").rlike(SUB_ID)
                  & F.col("amount").rlike(AMOUNT) & F.upper("channel").isin(CHANNELS))
           .select(F.try_to_timestamp(F.regexp_replace("ts", " ", "T"),
                                      F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSSSSS][XXX]")).alias("timestamp"), "sub_id",
                   F.col("amount").try_cast("decimal(18,4)").alias("amount"),
                   F.upper("channel").alias("channel"))
           .where(F.col("timestamp").isNotNull() & (F.col("amount") > 0))
           .dropDuplicates(["timestamp", "sub_id", "amount", "channel"]))
    out = (txs.join(subs, "sub_id")
           .where(F.to_date("timestamp") >= F.col("activation_date"))
           .select("timestamp", F.concat("sub_id", F.lit("_"), F.date_format("activation_date", "yyyyMMdd"))
                   .alias("sub_row_key"), "sub_id", "amount", "channel", "activation_date"))
    out.write.mode("overwrite").parquet(args.output)
    t_write = time.monotonic()
    published = spark.read.parquet(args.output).count()
    spark.stop()
    print(json.dumps({"published": published,
                      "seconds": {"session_start": round(t_session - t0, 2),
                                  "read_validate_dedupe_join_write": round(t_write - t_session, 2)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
