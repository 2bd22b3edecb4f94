// Real-client check with the PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java).
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGPASSWORD, PGSSLMODE), exercises server-side prepared statements (after
// prepareThreshold uses, and from the first use with prepareThreshold=1), a
// batch insert, a cursor-mode fetch (setFetchSize in a transaction: named
// portal + Execute with a row limit), read/write splitting, metadata queries
// and error recovery, then prints ONE JSON object with what it saw. The Lua
// spec judges the values.
//
// usage: java -cp /usr/share/java/postgresql.jar JdbcClient.java [TABLE_NAME]

import java.sql.*;
import java.util.*;

public class JdbcClient {
    static final Map<String, Object> out = new LinkedHashMap<>();
    static volatile String step = "connect";
    static String table;

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    static Connection connect(String prepareThreshold) throws SQLException {
        String user = env("PGUSER", System.getProperty("user.name"));
        String url = "jdbc:postgresql://" + env("PGHOST", "localhost") + ":" + env("PGPORT", "5432")
            + "/" + env("PGDATABASE", user);
        Properties p = new Properties();
        p.setProperty("user", user);
        if (System.getenv("PGPASSWORD") != null) p.setProperty("password", System.getenv("PGPASSWORD"));
        if (System.getenv("PGSSLMODE") != null) p.setProperty("sslmode", System.getenv("PGSSLMODE"));
        p.setProperty("ApplicationName", "sy_jdbc_client");
        p.setProperty("connectTimeout", "10");
        p.setProperty("socketTimeout", "30"); // a stuck server fails the read instead of hanging
        if (prepareThreshold != null) p.setProperty("prepareThreshold", prepareThreshold);
        return DriverManager.getConnection(url, p);
    }

    static String json(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean || v instanceof Number) return v.toString();
        if (v instanceof Collection) {
            StringJoiner j = new StringJoiner(",", "[", "]");
            for (Object o : (Collection<?>) v) j.add(json(o));
            return j.toString();
        }
        if (v instanceof Map) {
            StringJoiner j = new StringJoiner(",", "{", "}");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) j.add(json(e.getKey().toString()) + ":" + json(e.getValue()));
            return j.toString();
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : v.toString().toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static synchronized void finish(int code) {
        System.out.println(json(out));
        System.out.flush();
        Runtime.getRuntime().halt(code); // also from the watchdog: a blocked socket read never returns
    }

    static synchronized void fail(String error, String sqlstate) {
        out.put("ok", false);
        out.put("step", step);
        out.put("error", error);
        if (sqlstate != null) out.put("error_sqlstate", sqlstate);
        finish(1);
    }

    // Expect the statement to fail; returns its SQLSTATE (null when it did not fail).
    static String sqlstate(Connection c, String sql) {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
            return null;
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    static long scalar(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    // Run a read until it returns `want` (replication is asynchronous).
    static long poll(Connection c, String sql, long want) throws Exception {
        long deadline = System.nanoTime() + 5_000_000_000L;
        for (;;) {
            long got = scalar(c, sql);
            if (got == want || System.nanoTime() > deadline) return got;
            Thread.sleep(50);
        }
    }

    // Run a PreparedStatement n times outside a transaction; {correct, on replica}.
    static int[] reusePrepared(Connection c, int n) throws SQLException {
        int correct = 0, replica = 0;
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT val, pg_is_in_recovery() FROM " + table + " WHERE id = ?")) {
            for (int i = 1; i <= n; i++) {
                ps.setInt(1, i * 7);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next() && ("v" + (i * 7)).equals(rs.getString(1))) correct++;
                    if (rs.getBoolean(2)) replica++;
                }
            }
        }
        return new int[] { correct, replica };
    }

    static void run() throws Exception {
        long t0 = System.nanoTime();
        Connection c = connect(null);
        DatabaseMetaData md = c.getMetaData();
        out.put("driver_version", md.getDriverVersion());
        out.put("server_version", md.getDatabaseProductVersion());

        step = "create_table";
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, val text)");
        }

        step = "batch_insert";
        c.setAutoCommit(false);
        int inserted = 0;
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + " (id, val) VALUES (?, ?)")) {
            for (int i = 1; i <= 1000; i++) {
                ps.setInt(1, i);
                ps.setString(2, "v" + i);
                ps.addBatch();
            }
            for (int n : ps.executeBatch()) inserted += n;
        }
        out.put("batch_inserted", inserted);
        out.put("txn_on_primary", scalar(c, "SELECT pg_is_in_recovery()::int") == 0);
        c.commit();
        c.setAutoCommit(true);

        step = "prepared_reuse";
        out.put("visible_rows", poll(c, "SELECT count(*) FROM " + table, 1000));
        int[] r = reusePrepared(c, 10);
        out.put("prepared_correct", r[0]);
        out.put("prepared_replica", r[1]);
        try (Connection c1 = connect("1")) {
            r = reusePrepared(c1, 10);
            out.put("prepared_t1_correct", r[0]);
            out.put("prepared_t1_replica", r[1]);
        }

        step = "fetch_size";
        c.setAutoCommit(false);
        int rows = 0;
        long sum = 0;
        try (Statement s = c.createStatement()) {
            s.setFetchSize(10);
            try (ResultSet rs = s.executeQuery("SELECT id FROM " + table + " ORDER BY id")) {
                while (rs.next()) { rows++; sum += rs.getInt(1); }
            }
        }
        c.commit();
        c.setAutoCommit(true);
        out.put("fetch_rows", rows);
        out.put("fetch_sum_ok", sum == 500500);

        step = "reads";
        int replica = 0, primary = 0;
        SortedSet<Integer> ports = new TreeSet<>();
        try (Statement s = c.createStatement()) {
            for (int i = 0; i < 10; i++) {
                try (ResultSet rs = s.executeQuery("SELECT pg_is_in_recovery(), inet_server_port()")) {
                    rs.next();
                    if (rs.getBoolean(1)) replica++; else primary++;
                    ports.add(rs.getInt(2));
                }
            }
        }
        out.put("replica_reads", replica);
        out.put("primary_reads", primary);
        out.put("read_ports", ports);

        step = "metadata";
        List<String> found = new ArrayList<>();
        try (ResultSet rs = c.getMetaData().getTables(null, null, table, new String[] { "TABLE" })) {
            while (rs.next()) found.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
        }
        out.put("metadata_tables", found);
        int cols = 0;
        try (ResultSet rs = c.getMetaData().getColumns(null, null, table, null)) {
            while (rs.next()) cols++;
        }
        out.put("metadata_columns", cols);

        step = "errors";
        out.put("error_sqlstate", sqlstate(c, "SELECT 1/0"));
        out.put("after_error", scalar(c, "SELECT 42"));
        c.setAutoCommit(false);
        sqlstate(c, "SELECT 1/0");
        out.put("aborted_txn_sqlstate", sqlstate(c, "SELECT 1"));
        c.rollback();
        out.put("after_error_txn", scalar(c, "SELECT 42"));
        c.commit();
        c.setAutoCommit(true);

        step = "drop_table";
        try (Statement s = c.createStatement()) {
            s.execute("DROP TABLE " + table);
        }
        out.put("dropped", true);
        c.close();
        out.put("elapsed_ms", (System.nanoTime() - t0) / 1_000_000);
        out.put("ok", true);
    }

    public static void main(String[] args) {
        table = args.length > 0 ? args[0] : "sy_cli_jdbc_" + ProcessHandle.current().pid();
        out.put("ok", false);
        out.put("client", "pgjdbc");
        out.put("table", table);
        int timeout = Integer.parseInt(env("SY_CLIENT_TIMEOUT", "60"));
        Thread watchdog = new Thread(() -> {
            try { Thread.sleep(timeout * 1000L); } catch (InterruptedException e) { return; }
            fail("timeout: no result after " + timeout + " s", null);
        });
        watchdog.setDaemon(true);
        watchdog.start();
        try {
            run();
        } catch (SQLException e) {
            fail(e.getClass().getSimpleName() + ": " + e.getMessage(), e.getSQLState());
        } catch (Exception e) {
            fail(e.getClass().getSimpleName() + ": " + e.getMessage(), null);
        }
        finish(0);
    }
}
