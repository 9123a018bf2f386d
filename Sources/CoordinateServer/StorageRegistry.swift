import CoordinateConfig
import CoordinateEngine
import CoordinateMetrics
import CoordinatePostgres
import CoordinateSQLite
import Foundation
import Logging

/// The one place that knows which storage backends this build has and how each is made from the configuration.
/// Everything else about a backend — starting it, its upkeep, its descriptors, where its time comes from — is
/// its own (``StorageBackend``), so adding a backend means its module and one entry here.
public struct StorageRegistry: Sendable {
    /// What a factory may use.
    public struct Context: Sendable {
        public var configuration: CoordinateConfiguration
        /// The file the configuration came from, for configuration errors.
        public var configurationSource: String
        public var logger: Logger
        public var metrics: CoordinateMetrics
        /// Tests that drive time by hand make the engine's clock decide even on a database that keeps time.
        public var clockOverridesDatabase: Bool
    }

    public typealias Factory = @Sendable (Context) throws(DaemonStartError) -> any StorageBackend

    public var factories: [StorageKind: Factory]

    /// The backends of this build.
    public static let builtIn = StorageRegistry(factories: [
        .memory: { _ in MemoryBackend() },
        .sqlite: makeSQLite,
        .postgres: makePostgres,
    ])

    /// The backend `context.configuration` names.
    public func makeBackend(_ context: Context) throws(DaemonStartError) -> any StorageBackend {
        let kind = context.configuration.server.storage
        guard let factory = factories[kind] else {
            throw .other("storage backend \(kind.rawValue) is not available in this build")
        }
        return try factory(context)
    }

    private static func makeSQLite(_ context: Context) throws(DaemonStartError) -> any StorageBackend {
        let path = context.configuration.resolvedSQLitePath()
        do {
            // Held for the life of the process: one daemon owns one file (storage.md §3.2).
            _ = try SQLiteBackend.acquireLockFile(for: path)
        } catch {
            throw .other(error.description)
        }
        let environment = ProcessInfo.processInfo.environment
        let testing = environment["COORDINATE_TESTING"] == "1"
        return SQLiteBackend(
            path: path, groupCommit: context.configuration.server.sqliteGroupCommit, logger: context.logger,
            maxPageCount: testing ? environment["COORDINATE_TEST_SQLITE_MAX_PAGE_COUNT"].flatMap(Int.init) : nil,
            // Tests that must tell the size-triggered checkpoint from the periodic one push the latter away.
            checkpointInterval: testing
                ? environment["COORDINATE_TEST_SQLITE_CHECKPOINT_SECONDS"].flatMap(Int.init) ?? 10 : 10,
            observer: context.metrics)
    }

    private static func makePostgres(_ context: Context) throws(DaemonStartError) -> any StorageBackend {
        let server = context.configuration.server
        let url: PostgresURL
        do {
            url = try PostgresURL(server.postgresURL ?? "")
        } catch {
            throw .configuration(
                ConfigurationError(
                    source: context.configurationSource, key: "coordinate.server.postgres_url",
                    reason: error.description))
        }
        return PostgresBackend(
            url: url, schema: server.postgresSchema, poolSize: server.postgresPoolSize,
            writeTransactions: server.postgresWriteTransactions, logger: context.logger, observer: context.metrics,
            useDatabaseClock: !context.clockOverridesDatabase)
    }
}
