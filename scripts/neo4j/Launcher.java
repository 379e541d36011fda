// A real Neo4j 5.26 (community, embedded) with Bolt on 127.0.0.1:PORT, for tests and development.
//   java -cp 'lib/*' Launcher.java PORT DATADIR [PASSWORD]
// Data persists in DATADIR. Auth is off unless PASSWORD (8+ characters) is given. Prints
// "neo4j ready bolt://127.0.0.1:PORT" once Bolt accepts connections; stops cleanly on SIGTERM/SIGINT, and also
// when stdin reaches end-of-file if KNOWREC_NEO4J_WATCH_STDIN=1 (so a parent that dies takes Neo4j with it).
import java.nio.file.Path;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

public class Launcher {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: java -cp 'lib/*' Launcher.java PORT DATADIR [PASSWORD]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        Path home = Path.of(args[1]).toAbsolutePath();
        String password = args.length > 2 ? args[2] : null;
        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, password != null)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(128))
                .build();
        if (password != null) {
            dbms.database("system").executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", java.util.Map.of("pw", password));
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("neo4j stopping");
            dbms.shutdown();
            System.out.println("neo4j stopped");
        }));
        System.out.println("neo4j ready bolt://127.0.0.1:" + port + " (Neo4j 5.26, data " + home + ")");
        System.out.flush();
        if ("1".equals(System.getenv("KNOWREC_NEO4J_WATCH_STDIN"))) {
            while (System.in.read() != -1) { /* discard */ }
            System.exit(0); // runs the shutdown hook
        }
        Thread.currentThread().join();
    }
}
