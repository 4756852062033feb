package org.facemark.core;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The phone's side of the one manifest contract: docs/manifest.schema.json (generated from
 * facemark/contract.py) read with {@link MiniJson}, and
 * <ol>
 *   <li>every key {@link ModelContract} cannot do without ({@link ModelContract#REQUIRED_KEYS}) is
 *       one the schema requires, so Python can never write a manifest the app refuses;</li>
 *   <li>each manifest given is valid against the schema (the keywords the generator uses: type,
 *       required, properties, additionalProperties, items, enum, const, anyOf) and parsed by
 *       ModelContract.</li>
 * </ol>
 * {@code java -cp CLASSES org.facemark.core.SchemaCheck SCHEMA [MANIFEST...]}: exit 0 when all
 * hold, 1 with one "FAIL" line per problem, 2 on a usage error.
 */
public final class SchemaCheck {
    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) throws IOException {
        if (args.length < 1) {
            System.err.println("usage: SchemaCheck SCHEMA [MANIFEST...]");
            System.exit(2);
        }
        Object schema = MiniJson.parse(read(Paths.get(args[0])));
        SchemaCheck check = new SchemaCheck();
        check.requiredByTheApp(schema);
        for (int i = 1; i < args.length; i++) {
            String text = read(Paths.get(args[i]));
            check.validate(schema, MiniJson.parse(text), args[i]);
            try {
                ModelContract.fromManifestJson(text);
            } catch (IllegalArgumentException e) {
                check.failures.add(args[i] + ": ModelContract refuses it: " + e.getMessage());
            }
        }
        check.failures.forEach(f -> System.out.println("FAIL " + f));
        System.out.println(check.failures.isEmpty() ? "schema check: OK" : "schema check: " + check.failures.size()
                + " failure(s)");
        System.exit(check.failures.isEmpty() ? 0 : 1);
    }

    private static String read(Path path) throws IOException {
        if (!Files.isRegularFile(path)) {
            System.err.println(path + ": missing");
            System.exit(2);
        }
        return new String(Files.readAllBytes(path), StandardCharsets.UTF_8);
    }

    /**
     * Each dotted key of REQUIRED_KEYS ("*" = any artifact name) is required by its parent's schema
     * (the parent itself may be optional: REQUIRED_KEYS lists it when it is not).
     */
    @SuppressWarnings("unchecked")
    private void requiredByTheApp(Object schema) {
        for (String dotted : ModelContract.REQUIRED_KEYS) {
            String[] parts = dotted.split("\\.");
            Map<String, Object> node = (Map<String, Object>) schema;
            for (int i = 0; i < parts.length - 1 && node != null; i++) {
                Object child = parts[i].equals("*") ? node.get("additionalProperties")
                        : ((Map<String, Object>) node.getOrDefault("properties", Map.of())).get(parts[i]);
                node = objectBranch(child);
            }
            String last = parts[parts.length - 1];
            Object required = node == null ? null : node.get("required");
            if (!(required instanceof List) || !((List<Object>) required).contains(last)) {
                failures.add("schema: the app needs '" + dotted + "' but the schema does not require '" + last + "'");
            }
        }
    }

    /** The object schema of a property (the non-null branch of an optional one's anyOf), or null. */
    @SuppressWarnings("unchecked")
    private static Map<String, Object> objectBranch(Object node) {
        if (!(node instanceof Map)) {
            return null;
        }
        Map<String, Object> schema = (Map<String, Object>) node;
        if (schema.get("anyOf") instanceof List) {
            for (Object branch : (List<Object>) schema.get("anyOf")) {
                if (branch instanceof Map && "object".equals(((Map<String, Object>) branch).get("type"))) {
                    return (Map<String, Object>) branch;
                }
            }
            return null;
        }
        return schema;
    }

    @SuppressWarnings("unchecked")
    private void validate(Object schemaNode, Object value, String where) {
        Map<String, Object> schema = (Map<String, Object>) schemaNode;
        if (schema.containsKey("anyOf")) {
            validateAnyOf((List<Object>) schema.get("anyOf"), value, where);
            return;
        }
        if (schema.containsKey("const") && !schema.get("const").equals(value)) {
            failures.add(where + ": expected " + schema.get("const") + ", got " + value);
            return;
        }
        if (schema.containsKey("enum") && !((List<Object>) schema.get("enum")).contains(value)) {
            failures.add(where + ": " + value + " is not one of " + schema.get("enum"));
            return;
        }
        Object type = schema.get("type");
        if (type != null && !hasType(value, (String) type)) {
            failures.add(where + ": expected " + type + ", got " + value);
            return;
        }
        if (value instanceof Map) {
            validateObject(schema, (Map<String, Object>) value, where);
        } else if (value instanceof List && schema.get("items") != null) {
            List<Object> items = (List<Object>) value;
            for (int i = 0; i < items.size(); i++) {
                validate(schema.get("items"), items.get(i), where + "[" + i + "]");
            }
        }
    }

    /** Valid when one branch is; else the failures of the branch that failed least. */
    private void validateAnyOf(List<Object> branches, Object value, String where) {
        List<String> fewest = null;
        for (Object branch : branches) {
            SchemaCheck trial = new SchemaCheck();
            trial.validate(branch, value, where);
            if (fewest == null || trial.failures.size() < fewest.size()) {
                fewest = trial.failures;
            }
        }
        failures.addAll(fewest);
    }

    @SuppressWarnings("unchecked")
    private void validateObject(Map<String, Object> schema, Map<String, Object> object, String where) {
        Object required = schema.get("required");
        if (required instanceof List) {
            for (Object key : (List<Object>) required) {
                if (!object.containsKey(key)) {
                    failures.add(where + ": missing key '" + key + "'");
                }
            }
        }
        Map<String, Object> properties = schema.get("properties") instanceof Map
                ? (Map<String, Object>) schema.get("properties") : Map.of();
        Object others = schema.get("additionalProperties");
        for (Map.Entry<String, Object> e : object.entrySet()) {
            String key = where + "." + e.getKey();
            if (properties.containsKey(e.getKey())) {
                validate(properties.get(e.getKey()), e.getValue(), key);
            } else if (others instanceof Map) {
                validate(others, e.getValue(), key);
            } else if (Boolean.FALSE.equals(others)) {
                failures.add(key + ": unknown key");
            }
        }
    }

    private static boolean hasType(Object value, String type) {
        switch (type) {
            case "object": return value instanceof Map;
            case "array": return value instanceof List;
            case "string": return value instanceof String;
            case "boolean": return value instanceof Boolean;
            case "number": return value instanceof Double;
            case "integer": return value instanceof Double && (Double) value == Math.rint((Double) value);
            case "null": return value == null;
            default: throw new IllegalArgumentException("schema: type '" + type + "' is not one SchemaCheck reads");
        }
    }
}
