package bench.peer;

import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.vertx.VertxParallelEoSStreamProcessor;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonArray;
import io.vertx.ext.web.client.WebClient;
import io.vertx.ext.web.client.WebClientOptions;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The benchmarks' peer: Confluent Parallel Consumer with its Vert.x module, doing the
 * consumer's work the way a Java user would.
 *
 * <p>Each line on standard input, {@code RUN BOOTSTRAP REQUESTS RESULTS URL ITEMS
 * PER_REQUEST}, runs a fresh parallel consumer (a new group, unordered, at most 64
 * concurrent requests) over a backlog of one record per item: {@code PER_REQUEST}
 * records become one KServe v1 POST ({@code {"instances":[...]}}), each prediction one
 * record on the results topic, and a batch counts as done only once all its result
 * records are acknowledged ({@code acks=all}). It prints {@code STARTED} when the first
 * batch arrives and, when every item's result is acknowledged, one JSON line: the seconds
 * and this process's CPU seconds (all threads, JIT and GC included) from the first batch
 * to the last acknowledgement, and its peak resident set. Several lines in one process:
 * the first warms the JVM up.
 */
public final class Peer {
    private static final int MAX_CONCURRENCY = 64;

    private Peer() {}

    public static void main(String[] args) throws Exception {
        BufferedReader input =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = input.readLine()) != null) {
            String[] words = line.trim().split("\\s+");
            if (words.length != 7 || !words[0].equals("RUN")) {
                System.err.println("expected: RUN BOOTSTRAP REQUESTS RESULTS URL ITEMS PER_REQUEST");
                System.exit(2);
            }
            String figures = run(words[1], words[2], words[3], words[4],
                    Long.parseLong(words[5]), Integer.parseInt(words[6]));
            System.out.println(figures);
            System.out.flush();
        }
        System.exit(0);
    }

    private static String run(String bootstrap, String requests, String results, String url,
            long items, int perRequest) throws Exception {
        Properties consumerProps = new Properties();
        consumerProps.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, "bench-peer-" + UUID.randomUUID());
        consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(
                consumerProps, new ByteArrayDeserializer(), new ByteArrayDeserializer());

        Properties producerProps = new Properties();
        producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        producerProps.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        producerProps.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        producerProps.put(ProducerConfig.BATCH_SIZE_CONFIG, 1024 * 1024);
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(
                producerProps, new ByteArraySerializer(), new ByteArraySerializer());

        Vertx vertx = Vertx.vertx();
        WebClient web = WebClient.create(vertx, new WebClientOptions()
                .setMaxPoolSize(MAX_CONCURRENCY)
                .setKeepAlive(true));
        ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .ordering(ProcessingOrder.UNORDERED)
                .maxConcurrency(MAX_CONCURRENCY)
                .batchSize(perRequest)
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .build();
        VertxParallelEoSStreamProcessor<byte[], byte[]> pc =
                new VertxParallelEoSStreamProcessor<>(vertx, web, options);

        AtomicLong acked = new AtomicLong();
        AtomicLong startedNs = new AtomicLong();
        AtomicLong startedCpuNs = new AtomicLong();
        CountDownLatch done = new CountDownLatch(1);
        long[] finished = new long[2];
        byte[] resultsTopic = results.getBytes(StandardCharsets.UTF_8);

        pc.subscribe(List.of(requests));
        pc.batchVertxFuture(context -> {
            if (startedNs.get() == 0 && startedNs.compareAndSet(0, System.nanoTime())) {
                startedCpuNs.set(cpuNs());
                System.out.println("STARTED");
                System.out.flush();
            }
            List<ConsumerRecord<byte[], byte[]>> records = context.getConsumerRecordsFlattened();
            return web.postAbs(url)
                    .putHeader("content-type", "application/json")
                    .sendBuffer(body(records))
                    .compose(answer -> {
                        if (answer.statusCode() != 200) {
                            return Future.failedFuture("HTTP " + answer.statusCode());
                        }
                        JsonArray predictions = answer.bodyAsJsonObject().getJsonArray("predictions");
                        if (predictions == null || predictions.size() != records.size()) {
                            return Future.failedFuture("wrong prediction count");
                        }
                        return produceAll(producer, results, records, predictions, acked, items,
                                done, finished);
                    });
        });

        if (!done.await(600, TimeUnit.SECONDS)) {
            throw new IllegalStateException("not every result was acknowledged within 600 s");
        }
        double seconds = (finished[0] - startedNs.get()) / 1e9;
        double cpuSeconds = (finished[1] - startedCpuNs.get()) / 1e9;
        pc.close();
        producer.close();
        vertx.close();
        return String.format(java.util.Locale.ROOT,
                "{\"items\":%d,\"per_request\":%d,\"seconds\":%.4f,\"cpu_s\":%.4f,\"peak_rss_mib\":%.1f}",
                items, perRequest, seconds, cpuSeconds, peakRssMib());
    }

    private static Future<Void> produceAll(KafkaProducer<byte[], byte[]> producer, String topic,
            List<ConsumerRecord<byte[], byte[]>> records, JsonArray predictions, AtomicLong acked,
            long items, CountDownLatch done, long[] finished) {
        Promise<Void> promise = Promise.promise();
        AtomicInteger left = new AtomicInteger(records.size());
        for (int i = 0; i < records.size(); i++) {
            ConsumerRecord<byte[], byte[]> record = records.get(i);
            byte[] value = ("{\"offset\":" + record.offset() + ",\"prediction\":"
                    + predictions.getValue(i) + "}").getBytes(StandardCharsets.UTF_8);
            producer.send(new ProducerRecord<>(topic, record.key(), value), (metadata, error) -> {
                if (error != null) {
                    promise.tryFail(error);
                    return;
                }
                if (left.decrementAndGet() == 0) {
                    promise.tryComplete();
                }
                if (acked.incrementAndGet() == items) {
                    finished[0] = System.nanoTime();
                    finished[1] = cpuNs();
                    done.countDown();
                }
            });
        }
        return promise.future();
    }

    private static Buffer body(List<ConsumerRecord<byte[], byte[]>> records) {
        Buffer body = Buffer.buffer(32 + 16 * records.size());
        body.appendString("{\"instances\":[");
        for (int i = 0; i < records.size(); i++) {
            if (i > 0) {
                body.appendString(",");
            }
            body.appendBytes(records.get(i).value());
        }
        return body.appendString("]}");
    }

    private static long cpuNs() {
        return ((com.sun.management.OperatingSystemMXBean)
                ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
    }

    private static double peakRssMib() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024.0;
            }
        }
        return 0;
    }
}
