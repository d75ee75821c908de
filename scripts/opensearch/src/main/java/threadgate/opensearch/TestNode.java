package threadgate.opensearch;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A single-node OpenSearch run in-process, for tests. The server jar and a few modules come from
 * the classpath; lang-painless and analysis-common (as modules) and the k-NN plugin (as a plugin)
 * are loaded from {@code <tg.home>/modules} and {@code <tg.home>/plugins} by OpenSearch's own
 * PluginsService, as in the distribution (own class loaders, version check, SPI).
 *
 * System properties:
 *   tg.home        the layout built by `mvn package` (target/home): modules/ and plugins/
 *   tg.data        data, logs and config of this run; the bound URL is written to tg.data/http.url
 *   tg.http.port   default 0: the OS picks a free port (no race with other test sessions)
 *   tg.parent.pid  exit when this process ends (the test session), even if it was killed
 */
public final class TestNode {

    /** Modules the distribution ships that are taken from the classpath here. */
    private static final String[] CLASSPATH_PLUGINS = {
        "org.opensearch.transport.Netty4Plugin",            // HTTP + transport
        "org.opensearch.index.reindex.ReindexPlugin",       // _delete_by_query, _update_by_query, _reindex
        "org.opensearch.index.mapper.MapperExtrasPlugin",   // scaled_float, rank_feature, search_as_you_type, ...
    };

    /** Node's plugin-list constructor is protected: a subclass exposes it. */
    static final class PluginNode extends Node {
        PluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = Paths.get(System.getProperty("tg.home", "target/home")).toAbsolutePath();
        Path data = Paths.get(System.getProperty("tg.data", "os-data")).toAbsolutePath();
        Path config = data.resolve("config");
        Files.createDirectories(config);
        watchParent(Long.getLong("tg.parent.pid", 0L));

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.resolve("data").toString())
            .put("path.logs", data.resolve("logs").toString())
            .put("cluster.name", "threadgate-test")
            .put("node.name", "node-1")
            .put("network.host", "127.0.0.1")
            .put("http.port", Integer.getInteger("tg.http.port", 0))
            .put("transport.port", 0)
            .put("discovery.type", "single-node")
            // a developer's or CI's disk may be fuller than the default watermarks allow
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        LogConfigurator.registerErrorListener();
        LogConfigurator.configureWithoutConfig(settings);   // log4j's console appender, INFO
        LogConfigurator.setNodeName("node-1");

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : CLASSPATH_PLUGINS) {
            plugins.add(Class.forName(name).asSubclass(Plugin.class));
        }
        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "node-1");
        Node node = new PluginNode(environment, plugins);
        node.start();

        int port = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().getPort();
        Path tmp = data.resolve("http.url.tmp");
        Files.writeString(tmp, "http://127.0.0.1:" + port + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, data.resolve("http.url"), StandardCopyOption.ATOMIC_MOVE);

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "test-node-shutdown"));
        stopped.await();
    }

    /** A node outliving its test session would hold ~500 MB until someone notices: follow the parent. */
    private static void watchParent(long pid) {
        if (pid <= 0) {
            return;
        }
        ProcessHandle.of(pid).ifPresentOrElse(
            parent -> parent.onExit().thenRun(() -> System.exit(0)),
            () -> System.exit(0));
    }
}
