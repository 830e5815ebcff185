import Foundation

/// Checks JSON values against the subset of JSON Schema (2020-12) that `schemas/` uses: type, enum, required,
/// properties, additionalProperties (false or a schema), propertyNames, items, minItems, minimum, `$ref` into
/// `$defs`. Unknown keywords fail loudly, so a schema cannot silently use something this does not check.
struct JSONSchemaValidator {
    let root: [String: Any]

    init(schemaFile: URL) throws {
        let data = try Data(contentsOf: schemaFile)
        self.root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    init(root: [String: Any]) {
        self.root = root
    }

    /// Problems of `value` against one sub-schema (a `$defs` entry), resolving references from the root.
    func validate(_ value: Any, against schema: [String: Any]) -> [String] {
        var problems: [String] = []
        self.check(value, against: schema, path: "$", problems: &problems)
        return problems
    }

    static let known: Set<String> = ["$schema", "$id", "title", "description", "type", "enum", "required", "properties",
                                     "additionalProperties", "propertyNames", "items", "minItems", "minimum", "$ref",
                                     "$defs", "examples"]

    /// Problems found, as paths and sentences; empty when the value conforms.
    func validate(_ value: Any) -> [String] {
        var problems: [String] = []
        self.check(value, against: self.root, path: "$", problems: &problems)
        return problems
    }

    private func resolve(_ ref: String) -> [String: Any] {
        precondition(ref.hasPrefix("#/$defs/"), "only local $defs references are supported: \(ref)")
        let name = String(ref.dropFirst("#/$defs/".count))
        return (self.root["$defs"] as! [String: Any])[name] as! [String: Any]
    }

    private func check(_ value: Any, against schema: [String: Any], path: String, problems: inout [String]) {
        for key in schema.keys where !Self.known.contains(key) {
            problems.append("\(path): the schema uses '\(key)', which this validator does not check")
        }
        if let ref = schema["$ref"] as? String {
            self.check(value, against: self.resolve(ref), path: path, problems: &problems)
        }
        if let type = schema["type"] as? String, !Self.matches(value, type: type) {
            problems.append("\(path): expected \(type), got \(Swift.type(of: value)) \(value)")
            return
        }
        if let options = schema["enum"] as? [Any], !options.contains(where: { Self.equal($0, value) }) {
            problems.append("\(path): \(value) is not one of \(options)")
        }
        if let minimum = schema["minimum"] as? Double, let number = value as? NSNumber, number.doubleValue < minimum {
            problems.append("\(path): \(number) is below the minimum \(minimum)")
        }
        if let object = value as? [String: Any] {
            for name in (schema["required"] as? [String]) ?? [] where object[name] == nil {
                problems.append("\(path): the required field '\(name)' is missing")
            }
            let properties = (schema["properties"] as? [String: Any]) ?? [:]
            for (name, item) in object {
                if let names = schema["propertyNames"] as? [String: Any] {
                    self.check(name, against: names, path: "\(path).\(name) (name)", problems: &problems)
                }
                if let sub = properties[name] as? [String: Any] {
                    self.check(item, against: sub, path: "\(path).\(name)", problems: &problems)
                } else if let additional = schema["additionalProperties"] {
                    if let allowed = additional as? Bool, !allowed {
                        problems.append("\(path): the field '\(name)' is not in the schema")
                    } else if let sub = additional as? [String: Any] {
                        self.check(item, against: sub, path: "\(path).\(name)", problems: &problems)
                    }
                }
            }
        }
        if let array = value as? [Any] {
            if let minItems = schema["minItems"] as? Int, array.count < minItems {
                problems.append("\(path): \(array.count) items, fewer than \(minItems)")
            }
            if let items = schema["items"] as? [String: Any] {
                for (i, item) in array.enumerated() { self.check(item, against: items, path: "\(path)[\(i)]", problems: &problems) }
            }
        }
    }

    private static func matches(_ value: Any, type: String) -> Bool {
        switch type {
        case "object": return value is [String: Any]
        case "array": return value is [Any]
        case "string": return value is String
        case "boolean":
            if let n = value as? NSNumber { return CFGetTypeIDIsBool(n) }
            return value is Bool
        case "integer":
            guard let n = value as? NSNumber, !CFGetTypeIDIsBool(n) else { return false }
            return n.doubleValue == n.doubleValue.rounded()
        case "number":
            guard let n = value as? NSNumber else { return false }
            return !CFGetTypeIDIsBool(n)
        default: return false
        }
    }

    private static func CFGetTypeIDIsBool(_ n: NSNumber) -> Bool {
        let code = String(cString: n.objCType)
        return code == "c" || code == "B"
    }

    private static func equal(_ a: Any, _ b: Any) -> Bool {
        if let a = a as? String, let b = b as? String { return a == b }
        if let a = a as? NSNumber, let b = b as? NSNumber { return a == b }
        return false
    }
}
