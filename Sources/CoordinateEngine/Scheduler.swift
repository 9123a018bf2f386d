/// The per-spec inputs of one scheduling decision (semantics.md §10.1).
public struct SchedulerInput: Sendable {
    public var name: Identifier
    /// Effective control fields.
    public var fields: SpecFields
    public var nextContinuous: Timestamp?
    /// Units observed PENDING.
    public var pending: Int
    /// AVAILABLE, non-delayed units.
    public var available: Int
    /// The priority of the best available unit, or 0 when there is none.
    public var unitPriority: Double

    public init(
        name: Identifier, fields: SpecFields, nextContinuous: Timestamp?, pending: Int, available: Int,
        unitPriority: Double
    ) {
        self.name = name
        self.fields = fields
        self.nextContinuous = nextContinuous
        self.pending = pending
        self.available = available
        self.unitPriority = unitPriority
    }

    /// Whether the interval of a continuous spec holds it back at `now` (semantics.md §9.3).
    func intervalBlocks(at now: Timestamp) -> Bool {
        guard fields.continuous, fields.interval != nil, let next = nextContinuous else { return false }
        return now < next
    }

    func atMaxRunning() -> Bool {
        guard let limit = fields.maxRunning else { return false }
        return Int64(pending) >= limit
    }

    /// Mintable: continuous, no available unit, interval due, below `max_running` (semantics.md §9.3).
    public func isMintable(at now: Timestamp) -> Bool {
        fields.continuous && available == 0 && !intervalBlocks(at: now) && !atMaxRunning()
    }

    /// will(s) of semantics.md §10.1.
    func willRun(at now: Timestamp) -> Bool {
        !intervalBlocks(at: now) && !atMaxRunning() && (available > 0 || isMintable(at: now))
    }
}

/// Smooth weighted round-robin credits of the three top-level buckets (semantics.md §10.4).
public struct SchedulerCredits: Sendable, Equatable {
    public var sources: Int64 = 0
    public var loops: Int64 = 0
    public var continuous: Int64 = 0

    public init() {}
}

/// The graph of one namespace's specs (semantics.md §10.2): paths, loops, sources and continuous specs, as
/// indexes into the name-sorted input array.
public struct SchedulerGraph: Sendable, Equatable {
    public var sources: [Int] = []
    public var paths: [[Int]] = []
    public var loops: [[Int]] = []
    public var continuous: [Int] = []

    /// Builds the graph of `specs`, which must be sorted by name.
    public init(specs: [SchedulerInput]) {
        let count = specs.count
        var indexByName: [Identifier: Int] = [:]
        for (index, spec) in specs.enumerated() { indexByName[spec.name] = index }
        let target: [Int?] = specs.map { spec in spec.fields.then.flatMap { indexByName[$0] } }
        var hasIncoming = [Bool](repeating: false, count: count)
        for case let next? in target { hasIncoming[next] = true }

        // Loops: each node has at most one outgoing edge, so walking from every node finds every cycle.
        var inLoop = [Bool](repeating: false, count: count)
        var state = [UInt8](repeating: 0, count: count)  // 0 unvisited, 1 on the current walk, 2 done
        for start in 0..<count where state[start] == 0 {
            var walk: [Int] = []
            var node: Int? = start
            while let current = node, state[current] == 0 {
                state[current] = 1
                walk.append(current)
                node = target[current]
            }
            if let current = node, state[current] == 1, let loopStart = walk.firstIndex(of: current) {
                var members = Array(walk[loopStart...])
                for member in members { inLoop[member] = true }
                // List the loop from its smallest-named member (the smallest index, names being sorted).
                let smallest = members.min()!
                let offset = members.firstIndex(of: smallest)!
                members = Array(members[offset...] + members[..<offset])
                loops.append(members)
            }
            for node in walk { state[node] = 2 }
        }
        loops.sort { $0[0] < $1[0] }

        for index in 0..<count where specs[index].fields.continuous { continuous.append(index) }
        for index in 0..<count where !inLoop[index] && !hasIncoming[index] { sources.append(index) }

        var pathOf = [Int?](repeating: nil, count: count)
        for source in sources {
            var collected: [Int] = specs[source].fields.continuous ? [] : [source]
            var current = target[source]
            while let node = current, !inLoop[node], pathOf[node] == nil, !collected.contains(node) {
                collected.append(node)
                current = target[node]
            }
            if let node = current, let existing = pathOf[node] {
                paths[existing] = collected + paths[existing]
                for member in collected { pathOf[member] = existing }
            } else if !collected.isEmpty {
                for member in collected { pathOf[member] = paths.count }
                paths.append(collected)
            }
        }
    }
}

/// The deterministic scheduler of semantics.md §10.
public enum Scheduler {
    /// A work request's filters.
    public struct Filter: Sendable {
        /// Only these spec names; nil means all (an empty set matches nothing).
        public var specNames: Set<Identifier>?
        /// Only specs whose runtime is one of these; nil means any runtime (an empty list matches nothing).
        public var runtimes: [[UInt8]]?

        public init(specNames: Set<Identifier>? = nil, runtimes: [[UInt8]]? = nil) {
            self.specNames = specNames
            self.runtimes = runtimes
        }
    }

    /// Picks the spec a work request draws from, updating the round-robin credits; nil when no spec is
    /// eligible. `specs` must be sorted by name.
    public static func choose(
        specs: [SchedulerInput], filter: Filter, now: Timestamp, credits: inout SchedulerCredits,
        graph cachedGraph: SchedulerGraph? = nil
    ) -> Int? {
        var eligible = [Bool](repeating: false, count: specs.count)
        var topPriority = Int64.min
        for (index, spec) in specs.enumerated() {
            let fields = spec.fields
            guard !fields.paused, fields.weight >= 1 else { continue }
            if let names = filter.specNames, !names.contains(spec.name) { continue }
            if let runtimes = filter.runtimes, !runtimes.contains(fields.runtime) { continue }
            guard spec.willRun(at: now) else { continue }
            eligible[index] = true
            topPriority = max(topPriority, fields.priority)
        }
        guard eligible.contains(true) else { return nil }
        let candidate = eligible.indices.map { eligible[$0] && specs[$0].fields.priority == topPriority }

        let graph = cachedGraph ?? SchedulerGraph(specs: specs)
        let context = ChoiceContext(specs: specs, candidate: candidate)
        if let pick = context.choose(from: graph.paths, pickLast: true, allowEmpty: false) { return pick }

        let fromSources = context.choose(from: graph.sources.map { [$0] }, pickLast: false, allowEmpty: false)
        let fromLoops = context.choose(from: graph.loops, pickLast: false, allowEmpty: false)
        let fromContinuous = context.choose(from: graph.continuous.map { [$0] }, pickLast: false, allowEmpty: true)

        let weights: (sources: Int64, loops: Int64, continuous: Int64) = (20, 10, 1)
        var total: Int64 = 0
        if fromSources != nil {
            credits.sources += weights.sources
            total += weights.sources
        }
        if fromLoops != nil {
            credits.loops += weights.loops
            total += weights.loops
        }
        if fromContinuous != nil {
            credits.continuous += weights.continuous
            total += weights.continuous
        }
        guard total > 0 else { return nil }
        // The bucket with the largest credit wins; ties go to sources, then loops, then continuous.
        var best: (credit: Int64, pick: Int, bucket: Int)?
        for (bucket, pick, credit) in [
            (0, fromSources, credits.sources), (1, fromLoops, credits.loops), (2, fromContinuous, credits.continuous),
        ] {
            guard let pick else { continue }
            if best == nil || credit > best!.credit { best = (credit, pick, bucket) }
        }
        guard let best else { return nil }
        switch best.bucket {
        case 0: credits.sources -= total
        case 1: credits.loops -= total
        default: credits.continuous -= total
        }
        return best.pick
    }

    struct ChoiceContext {
        let specs: [SchedulerInput]
        let candidate: [Bool]

        /// score(s) = (1 + pending) / weight, as an exact fraction.
        func scoreLess(_ a: Int, _ b: Int) -> Bool {
            let left = Int64(1 + specs[a].pending) * specs[b].fields.weight
            let right = Int64(1 + specs[b].pending) * specs[a].fields.weight
            return left < right
        }

        /// choose_from of semantics.md §10.3.
        func choose(from lists: [[Int]], pickLast: Bool, allowEmpty: Bool) -> Int? {
            var level = -Double.infinity
            var scored = Set<Int>()
            var best: (list: [Int], score: Int)?
            for list in lists {
                var listScore: Int?
                for spec in list {
                    guard candidate[spec], allowEmpty || specs[spec].available > 0 else { continue }
                    let priority = specs[spec].unitPriority
                    if priority < level { continue }
                    if priority > level {
                        level = priority
                        scored.removeAll()
                        listScore = nil
                        best = nil
                    }
                    scored.insert(spec)
                    if listScore == nil || scoreLess(spec, listScore!) { listScore = spec }
                }
                if let listScore, best == nil || scoreLess(listScore, best!.score) {
                    best = (list, listScore)
                }
            }
            guard let best else { return nil }
            var choice: Int?
            var minimum: Int?
            var previousDefers = false
            for spec in best.list {
                if scored.contains(spec) {
                    if previousDefers || minimum == nil || scoreLess(spec, minimum!) {
                        choice = spec
                    }
                    if minimum == nil || scoreLess(spec, minimum!) { minimum = spec }
                }
                previousDefers = pickLast && specs[spec].fields.thenPreempts
            }
            return choice
        }
    }
}
