import CBOR

/// A unit leased to a worker by ``CoordinateClient/getWork(workerID:specNames:maxJobs:leaseSeconds:)``.
///
/// The server never checks who owns a unit over CBOR-RPC (semantics.md §8.2): these methods act on the unit
/// whoever holds it. ``checkLease()`` tells whether this worker still does.
public struct WorkUnit: Sendable {
    /// The client the unit came from; its calls go through it.
    public let client: CoordinateClient
    /// The spec's stored name.
    public let specName: CBORValue
    /// The unit's stored key.
    public let key: CBORValue
    /// The unit's data as handed out (or as last sent with ``finish(data:)``/``fail(traceback:data:)``).
    public var data: CBORValue
    /// The worker the unit was leased to.
    public let workerID: String
    /// The lease requested for this unit, in seconds; renewals ask for the same unless told otherwise.
    public let leaseSeconds: Double

    public init(
        client: CoordinateClient, specName: CBORValue, key: CBORValue, data: CBORValue, workerID: String,
        leaseSeconds: Double
    ) {
        self.client = client
        self.specName = specName
        self.key = key
        self.data = data
        self.workerID = workerID
        self.leaseSeconds = leaseSeconds
    }

    /// The spec name as a Swift string.
    public var specNameString: String { specName.stringValue ?? "" }

    /// Marks the unit FINISHED (firing `then` chaining), replacing its data when `data` is given.
    public func finish(data: CBORValue? = nil) async throws {
        try await client.updateWorkUnit(specName, key: key, status: .finished, data: data)
    }

    /// Marks the unit FAILED. With a `traceback`, the unit's data gains a `traceback` entry (what the Python
    /// tools and `get_work_unit_status` show); `data` replaces the data first.
    public func fail(traceback: String? = nil, data: CBORValue? = nil) async throws {
        var newData = data
        if let traceback {
            var map = (data ?? self.data).mapValue ?? CBORMap()
            map.pairs.removeAll { $0.key.stringOctets == Array("traceback".utf8) }
            map.append(.bytes(Array("traceback".utf8)), .text(traceback))
            newData = .map(map)
        }
        try await client.updateWorkUnit(specName, key: key, status: .failed, data: newData)
    }

    /// Extends the lease by `leaseSeconds` (default: the lease first requested) from now, optionally storing new
    /// data. Throws ``CoordinateClientError/lostLease(_:)`` when the unit is no longer pending.
    public func renew(leaseSeconds: Double? = nil, data: CBORValue? = nil) async throws {
        try await client.updateWorkUnit(specName, key: key, leaseSeconds: leaseSeconds ?? self.leaseSeconds, data: data)
    }

    /// Returns the unit to the queue so another worker can take it.
    public func release() async throws {
        try await client.updateWorkUnit(specName, key: key, status: .available, leaseSeconds: 0)
    }

    /// The unit's current status, or `nil` if it no longer exists.
    public func status() async throws -> WorkUnitStatusReport? {
        try await client.workUnitStatus(specName, keys: [key]).first.flatMap { $0 }
    }

    /// Throws ``CoordinateClientError/lostLease(_:)`` unless the unit is pending and held by ``workerID``.
    public func checkLease() async throws {
        guard let report = try await status() else { throw CoordinateClientError.lostLease("work unit was deleted") }
        guard report.status == .pending else {
            throw CoordinateClientError.lostLease("work unit is \(report.status)")
        }
        if let holder = report.workerID?.stringValue, holder != workerID {
            throw CoordinateClientError.lostLease("work unit is held by \(holder)")
        }
    }
}
