/// An ordered multiset kept as a list of sorted chunks (a two-level B+-tree without internal nodes).
///
/// Lookups, inserts and removals cost O(log n) comparisons plus moving at most one chunk's worth of
/// references; iteration is in order from any position. Chunks hold at most `chunkCapacity` elements and empty
/// chunks are dropped at once, so the structure reproduces exact order after any sequence of inserts and
/// removals (storage.md §2 forbids heaps that only sift one way).
struct SortedChunks<Element: Comparable> {
    private var chunks: [[Element]] = []
    private(set) var count = 0

    let chunkCapacity: Int

    init(chunkCapacity: Int = 256) {
        precondition(chunkCapacity >= 4)
        self.chunkCapacity = chunkCapacity
    }

    var isEmpty: Bool { count == 0 }

    var first: Element? { chunks.first?.first }

    /// The chunk whose range covers `element`: the last chunk whose first element is ≤ it (or the first chunk).
    private func chunkIndex(for element: Element) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if chunks[middle][0] <= element {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return max(0, low - 1)
    }

    /// Index of the first element ≥ `element` within a chunk.
    private static func lowerBound(_ chunk: [Element], _ element: Element) -> Int {
        var low = 0
        var high = chunk.count
        while low < high {
            let middle = (low + high) / 2
            if chunk[middle] < element {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low
    }

    mutating func insert(_ element: Element) {
        count += 1
        if chunks.isEmpty {
            chunks.append([element])
            return
        }
        let index = chunkIndex(for: element)
        let position = Self.lowerBound(chunks[index], element)
        chunks[index].insert(element, at: position)
        if chunks[index].count > chunkCapacity {
            let upper = Array(chunks[index][(chunkCapacity / 2)...])
            chunks[index].removeSubrange((chunkCapacity / 2)...)
            chunks.insert(upper, at: index + 1)
        }
    }

    /// Removes one element equal to `element`; returns whether one was found.
    @discardableResult
    mutating func remove(_ element: Element) -> Bool {
        guard !chunks.isEmpty else { return false }
        var index = chunkIndex(for: element)
        // Equal elements may straddle a chunk boundary; look back while the previous chunk could hold it.
        while true {
            let position = Self.lowerBound(chunks[index], element)
            if position < chunks[index].count, chunks[index][position] == element {
                chunks[index].remove(at: position)
                if chunks[index].isEmpty { chunks.remove(at: index) }
                count -= 1
                return true
            }
            guard index > 0, let last = chunks[index - 1].last, !(last < element) else { return false }
            index -= 1
        }
    }

    func contains(_ element: Element) -> Bool {
        guard !chunks.isEmpty else { return false }
        let index = chunkIndex(for: element)
        let position = Self.lowerBound(chunks[index], element)
        return position < chunks[index].count && chunks[index][position] == element
    }

    mutating func removeAll() {
        chunks.removeAll()
        count = 0
    }

    /// Calls `body` on elements in order, starting at the first element for which `isBefore` is false, until
    /// `body` returns false. `isBefore` must be true for a prefix of the order and false afterwards.
    func forEach(from isBefore: (Element) -> Bool = { _ in false }, _ body: (Element) throws -> Bool) rethrows {
        // Binary search over chunks for the first chunk whose last element is not before the bound.
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if isBefore(chunks[middle][chunks[middle].count - 1]) {
                low = middle + 1
            } else {
                high = middle
            }
        }
        var chunkIndex = low
        guard chunkIndex < chunks.count else { return }
        var lowElement = 0
        var highElement = chunks[chunkIndex].count
        while lowElement < highElement {
            let middle = (lowElement + highElement) / 2
            if isBefore(chunks[chunkIndex][middle]) {
                lowElement = middle + 1
            } else {
                highElement = middle
            }
        }
        var position = lowElement
        while chunkIndex < chunks.count {
            let chunk = chunks[chunkIndex]
            while position < chunk.count {
                if try !body(chunk[position]) { return }
                position += 1
            }
            chunkIndex += 1
            position = 0
        }
    }

    /// Up to `limit` elements in order from the start.
    func prefix(_ limit: Int) -> [Element] {
        var result: [Element] = []
        result.reserveCapacity(min(limit, count))
        forEach { element in
            guard result.count < limit else { return false }
            result.append(element)
            return result.count < limit
        }
        return result
    }

    /// Up to `limit` elements from the end, last first.
    func suffixReversed(_ limit: Int) -> [Element] {
        var result: [Element] = []
        result.reserveCapacity(min(limit, count))
        for chunk in chunks.reversed() {
            for element in chunk.reversed() {
                guard result.count < limit else { return result }
                result.append(element)
            }
        }
        return result
    }

    /// Checks the structural invariants (tests only).
    func validate() -> Bool {
        var total = 0
        var previous: Element?
        for chunk in chunks {
            if chunk.isEmpty || chunk.count > chunkCapacity { return false }
            for element in chunk {
                if let previous, element < previous { return false }
                previous = element
                total += 1
            }
        }
        return total == count
    }
}
