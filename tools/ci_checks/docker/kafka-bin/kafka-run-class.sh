#!/bin/sh
# Run a Kafka class on the image's classpath: the few command-line tools the project's
# compose file and checks use (the official image ships the whole bin/ directory).
# KAFKA_TOOLS_OPTS replaces the default JVM options, which favour a quick start.
exec java ${KAFKA_TOOLS_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} \
  -cp "/opt/kafka/libs/*" "$@"
