/// The product version printed by `--version` and reported by `/healthz` and `coordinate_build_info`.
/// Kept equal to the repository's `VERSION` file (a test checks it).
public let coordinateVersion = "0.1.0"
