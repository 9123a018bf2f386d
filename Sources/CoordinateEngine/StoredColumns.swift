/// The columns the SQL backends store records in, one list per table, in the order both backends' row readers
/// and insert parameters use: the two schemas select and insert the same columns by construction. (Like
/// ``StoredCode``, this is the stored form of the model, which both SQL modules share; the schemas that create
/// the tables are each backend's own.)
public enum StoredColumns {
    /// `work_unit` without its id: an insert's columns.
    public static let unitValues =
        "spec_id, key, key_kind, data, priority, not_before, state, bucket, time, latest_attempt_id, attempt_count, retry_count_base, data_crc, original_data"
    /// `work_unit` as it is read.
    public static let unit = "id, " + unitValues
    /// `attempt` without its id: an insert's columns.
    public static let attemptValues =
        "unit_id, spec_id, namespace_id, worker, worker_kind, start_time, expiration_time, end_time, status, data"
    /// `attempt` as it is read.
    public static let attempt = "id, " + attemptValues
    /// `worker`, as it is read and written.
    public static let worker =
        "namespace_id, name, name_kind, active, mode, data, parent, parent_kind, first_seen, last_heartbeat, expiration"
    /// `held_lock`, as it is read and written.
    public static let lock = "namespace_id, path_key, path, owner, owner_kind, deadline"

    /// A list with each column qualified by a table alias: `u.id, u.spec_id, …`.
    public static func qualified(_ list: String, by alias: String) -> String {
        list.split(separator: ", ").map { "\(alias).\($0)" }.joined(separator: ", ")
    }

    /// How many columns a list names.
    public static func count(_ list: String) -> Int { list.split(separator: ",").count }
}
