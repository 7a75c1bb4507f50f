# The CI's stand-in for apache/kafka (which it cannot pull): the jars the local broker
# runs (tools/localkafka/broker.py, from Maven Central) plus kafka-tools for the scripts the
# compose file uses, on a Debian JRE. tools/ci_checks/docker/images.py assembles the build context:
#   libs/  bin/  kafka_entrypoint.py
# The entry point reads the environment the way the official image does.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin appuser \
    && mkdir -p /opt/kafka/config \
    && chown appuser /opt/kafka/config
COPY libs /opt/kafka/libs
COPY bin /opt/kafka/bin
COPY kafka_entrypoint.py /opt/kafka/entrypoint.py
ENV PATH=/opt/kafka/bin:$PATH
USER appuser
WORKDIR /opt/kafka
EXPOSE 9092
ENTRYPOINT ["python3", "/opt/kafka/entrypoint.py"]
