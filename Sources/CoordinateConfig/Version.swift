/// The product version printed by every program's `--version` and reported by `/healthz` and
/// `coordinate_build_info`.
public enum CoordinateVersion {
    /// Kept equal to the repository's `VERSION` file (a test checks it).
    public static let current = "0.1.0"
}
