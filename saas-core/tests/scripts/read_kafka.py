"""Reads the records of one Kafka topic with confluent-kafka (librdkafka's Python client),
a client saas-rs did not write, and prints them as JSON lines: key, headers, value.
Usage: read_kafka.py BOOTSTRAP TOPIC COUNT. Exits 1 if COUNT records do not arrive in 30 s."""
import json
import sys
import time

from confluent_kafka import Consumer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": f"python-reader-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.subscribe([topic])
records, deadline = [], time.time() + 30
while len(records) < count and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is None or message.error():
        continue
    records.append(
        {
            "key": message.key().decode(),
            "headers": {k: v.decode() for k, v in (message.headers() or [])},
            "value": json.loads(message.value()),
        }
    )
consumer.close()
for record in records:
    print(json.dumps(record))
sys.exit(0 if len(records) == count else 1)
