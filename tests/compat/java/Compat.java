// pgjdbc (Debian's libpostgresql-jdbc-java) with prepareThreshold=1: every
// PreparedStatement becomes a named server-side statement on its first
// execution. Run with the JDK's single-file launcher:
//   java -cp /usr/share/java/postgresql.jar Compat.java
// The same contract as the Python scripts (see python/compat_common.py).

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

public class Compat {
    static final String TABLE = System.getenv("COMPAT_TABLE");
    static final int CLIENTS = Integer.parseInt(env("COMPAT_CLIENTS", "24"));
    static final int ROUNDS = Integer.parseInt(env("COMPAT_ROUNDS", "30"));
    static final AtomicInteger checks = new AtomicInteger();

    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null ? d : v;
    }

    static void eq(long got, long want, String what) {
        if (got != want) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
        checks.incrementAndGet();
    }

    static boolean client(int i) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE") + "?prepareThreshold=1";
        Properties p = new Properties();
        p.setProperty("user", System.getenv("PGUSER"));
        p.setProperty("password", System.getenv("PGPASSWORD"));
        Set<Integer> pids = new HashSet<>();
        try (Connection c = DriverManager.getConnection(url, p);
                PreparedStatement add = c.prepareStatement(
                        "SELECT ?::int + ?::int AS s, pg_backend_pid() AS pid");
                PreparedStatement ins = c.prepareStatement(
                        "INSERT INTO " + TABLE + " (client, seq, note) VALUES (?, ?, ?)");
                PreparedStatement count = c.prepareStatement(
                        "SELECT count(*) FROM " + TABLE + " WHERE client = ?");
                PreparedStatement total = c.prepareStatement(
                        "SELECT count(*), sum(seq) FROM " + TABLE + " WHERE client = ?")) {
            for (int r = 0; r < ROUNDS; r++) {
                add.setInt(1, i);
                add.setInt(2, r);
                try (ResultSet rs = add.executeQuery()) {
                    rs.next();
                    eq(rs.getInt(1), i + r, "sum");
                    pids.add(rs.getInt(2));
                }
                ins.setInt(1, i);
                ins.setInt(2, r);
                ins.setString(3, "c" + i + "-r" + r);
                eq(ins.executeUpdate(), 1, "inserted");
                if (r % 5 == 4) {
                    c.setAutoCommit(false);
                    count.setInt(1, i);
                    try (ResultSet rs = count.executeQuery()) {
                        rs.next();
                        eq(rs.getLong(1), r + 1, "rows in a transaction");
                    }
                    c.commit();
                    c.setAutoCommit(true);
                }
            }
            total.setInt(1, i);
            try (ResultSet rs = total.executeQuery()) {
                rs.next();
                eq(rs.getLong(1), ROUNDS, "all rows");
                eq(rs.getLong(2), ROUNDS * (ROUNDS - 1) / 2, "sum of seq");
            }
        }
        return pids.size() > 1;
    }

    public static void main(String[] args) throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(CLIENTS);
        List<Future<Boolean>> fs = new ArrayList<>();
        for (int i = 0; i < CLIENTS; i++) {
            final int id = i;
            fs.add(ex.submit(() -> client(id)));
        }
        int moved = 0;
        for (Future<Boolean> f : fs) {
            if (f.get()) {
                moved++;
            }
        }
        ex.shutdown();
        System.out.println("RESULT clients=" + CLIENTS + " checks=" + checks.get() + " moved=" + moved);
    }
}
