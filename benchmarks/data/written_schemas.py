"""Schemas written for this benchmark in the shape of two JSONSchemaBench categories that no PyPI package
reachable here ships: Snowplow (Iglu self-describing event / entity schemas: `self` block, bounded
strings, nullable types, enums, formats, integer ranges, closed objects) and Glaive function calls
(the `parameters` object of a function-calling tool: typed properties, enums, nested objects, arrays,
`required`). Written by hand; make_json_schemas.py appends them to json_schemas.jsonl.
"""
from __future__ import annotations

IGLU = "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#"


def _self(vendor: str, name: str, version: str = "1-0-0") -> dict:
    return {"vendor": vendor, "name": name, "format": "jsonschema", "version": version}


def _s(max_len: int, nullable: bool = False, **kw) -> dict:
    return {"type": ["string", "null"] if nullable else "string", "maxLength": max_len, **kw}


SNOWPLOW = {
    "link_click": {
        "$schema": IGLU, "description": "Schema for a link click event", "self": _self("com.example", "link_click"),
        "type": "object",
        "properties": {"elementId": _s(4096), "elementClasses": {"type": "array", "items": _s(4096)},
                       "elementTarget": _s(4096), "targetUrl": {"type": "string", "minLength": 1, "format": "uri"},
                       "elementContent": _s(4096)},
        "required": ["targetUrl"], "additionalProperties": False},
    "page_ping": {
        "$schema": IGLU, "self": _self("com.example", "page_ping", "1-0-1"), "type": "object",
        "properties": {"minXOffset": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                       "maxXOffset": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                       "minYOffset": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                       "maxYOffset": {"type": "integer", "minimum": 0, "maximum": 2147483647}},
        "required": ["minXOffset", "maxXOffset", "minYOffset", "maxYOffset"], "additionalProperties": False},
    "ecommerce_transaction": {
        "$schema": IGLU, "self": _self("com.example.ecommerce", "transaction", "1-0-2"), "type": "object",
        "properties": {"orderId": _s(255), "affiliation": _s(255, True),
                       "total": {"type": "number", "minimum": 0, "maximum": 1e9},
                       "tax": {"type": ["number", "null"], "minimum": 0},
                       "shipping": {"type": ["number", "null"], "minimum": 0},
                       "city": _s(255, True), "state": _s(255, True), "country": _s(255, True),
                       "currency": {"type": ["string", "null"], "minLength": 3, "maxLength": 3},
                       "items": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "additionalProperties": False, "required": ["sku", "price", "quantity"],
                           "properties": {"sku": _s(255), "name": _s(255, True), "category": _s(255, True),
                                          "price": {"type": "number", "minimum": 0},
                                          "quantity": {"type": "integer", "minimum": 1, "maximum": 10000}}}}},
        "required": ["orderId", "total", "items"], "additionalProperties": False},
    "consent_preferences": {
        "$schema": IGLU, "self": _self("com.example", "consent_preferences"), "type": "object",
        "properties": {"basisForProcessing": {"type": "string", "enum": [
                           "consent", "contract", "legal_obligation", "vital_interests", "public_task",
                           "legitimate_interests"]},
                       "consentUrl": {"type": "string", "format": "uri", "maxLength": 4096},
                       "consentVersion": _s(16), "consentScopes": {"type": "array", "items": _s(64), "maxItems": 32},
                       "domainsApplied": {"type": ["array", "null"], "items": {"type": "string", "format": "hostname"}},
                       "gdprApplies": {"type": ["boolean", "null"]}},
        "required": ["basisForProcessing", "consentScopes"], "additionalProperties": False},
    "mobile_context": {
        "$schema": IGLU, "self": _self("com.example.mobile", "mobile_context", "1-0-3"), "type": "object",
        "properties": {"osType": {"type": "string", "enum": ["ios", "android", "windows", "linux", "other"]},
                       "osVersion": _s(255), "deviceManufacturer": _s(255), "deviceModel": _s(255),
                       "carrier": _s(255, True), "networkType": {"type": ["string", "null"],
                                                                "enum": ["mobile", "wifi", "offline", None]},
                       "networkTechnology": _s(255, True), "openIdfa": _s(255, True),
                       "appleIdfa": {"type": ["string", "null"], "format": "uuid"},
                       "androidIdfa": _s(255, True), "batteryLevel": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                       "physicalMemory": {"type": ["integer", "null"], "minimum": 0}},
        "required": ["osType", "osVersion", "deviceManufacturer", "deviceModel"], "additionalProperties": False},
    "web_vitals": {
        "$schema": IGLU, "self": _self("com.example", "web_vitals"), "type": "object",
        "properties": {"cls": {"type": ["number", "null"]}, "fid": {"type": ["number", "null"]},
                       "lcp": {"type": ["number", "null"]}, "fcp": {"type": ["number", "null"]},
                       "ttfb": {"type": ["number", "null"]}, "navigationType": {"type": ["string", "null"], "enum": [
                           "navigate", "reload", "back_forward", "prerender", None]},
                       "attribution": {"type": ["object", "null"], "additionalProperties": True}},
        "additionalProperties": False},
    "application_error": {
        "$schema": IGLU, "self": _self("com.example", "application_error", "1-0-2"), "type": "object",
        "properties": {"programmingLanguage": {"enum": ["JAVA", "SCALA", "RUBY", "JAVASCRIPT", "PYTHON", "GO",
                                                         "PHP", "C", "CPP", "OBJECTIVEC", "SWIFT", "KOTLIN", "RUST"]},
                       "message": {"type": "string", "minLength": 1, "maxLength": 2048},
                       "threadName": _s(1024, True), "threadId": {"type": ["integer", "null"], "minimum": 0},
                       "stackTrace": _s(8192, True), "causeStackTrace": _s(8192, True),
                       "lineNumber": {"type": ["integer", "null"], "minimum": 0}, "className": _s(1024, True),
                       "exceptionName": _s(1024, True), "isFatal": {"type": ["boolean", "null"]},
                       "lineColumn": {"type": ["integer", "null"], "minimum": 0}, "fileName": _s(1024, True)},
        "required": ["programmingLanguage", "message"], "additionalProperties": False},
    "timing": {
        "$schema": IGLU, "self": _self("com.example", "timing"), "type": "object",
        "properties": {"category": {"type": "string", "maxLength": 255}, "variable": {"type": "string", "maxLength": 255},
                       "timing": {"type": "integer", "minimum": -2147483648, "maximum": 2147483647},
                       "label": _s(4096, True)},
        "required": ["category", "variable", "timing"], "additionalProperties": False},
    "session": {
        "$schema": IGLU, "self": _self("com.example", "client_session", "1-0-2"), "type": "object",
        "properties": {"userId": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                                  "maxLength": 36},
                       "sessionId": {"type": "string", "format": "uuid"},
                       "sessionIndex": {"type": "integer", "minimum": 0, "maximum": 2147483647},
                       "previousSessionId": {"type": ["string", "null"], "format": "uuid"},
                       "storageMechanism": {"type": "string", "enum": ["SQLITE", "COOKIE_1", "COOKIE_3", "LOCAL_STORAGE",
                                                                       "FLASH_LSO"]},
                       "firstEventId": {"type": ["string", "null"], "format": "uuid"},
                       "firstEventTimestamp": {"type": ["string", "null"], "format": "date-time"},
                       "eventIndex": {"type": ["integer", "null"], "minimum": 0}},
        "required": ["userId", "sessionId", "sessionIndex", "storageMechanism"], "additionalProperties": False},
    "geolocation": {
        "$schema": IGLU, "self": _self("com.example", "geolocation_context", "1-1-0"), "type": "object",
        "properties": {"latitude": {"type": "number", "minimum": -90, "maximum": 90},
                       "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                       "latitudeLongitudeAccuracy": {"type": ["number", "null"]}, "altitude": {"type": ["number", "null"]},
                       "altitudeAccuracy": {"type": ["number", "null"]}, "bearing": {"type": ["number", "null"]},
                       "speed": {"type": ["number", "null"]}, "timestamp": {"type": ["integer", "null"]}},
        "required": ["latitude", "longitude"], "additionalProperties": False},
}


def _fn(props: dict, required: list) -> dict:
    return {"type": "object", "properties": props, "required": required}


GLAIVE = {
    "get_weather": _fn({"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["location"]),
    "calculate_loan_payment": _fn({"principal": {"type": "number", "description": "The loan amount"},
                                   "interest_rate": {"type": "number", "description": "The annual interest rate"},
                                   "loan_term": {"type": "integer", "description": "The loan term in months"}},
                                  ["principal", "interest_rate", "loan_term"]),
    "search_recipes": _fn({"ingredients": {"type": "array", "items": {"type": "string"},
                                           "description": "The ingredients to search for"},
                           "cuisine": {"type": "string", "description": "The cuisine type"},
                           "diet": {"type": "string", "enum": ["vegetarian", "vegan", "gluten-free", "none"]}},
                          ["ingredients"]),
    "create_calendar_event": _fn({"title": {"type": "string"}, "start_time": {"type": "string", "format": "date-time"},
                                  "end_time": {"type": "string", "format": "date-time"},
                                  "attendees": {"type": "array", "items": {"type": "string", "format": "email"}},
                                  "location": {"type": "string"}}, ["title", "start_time", "end_time"]),
    "send_email": _fn({"recipient": {"type": "string", "description": "The email address of the recipient"},
                       "subject": {"type": "string"}, "message": {"type": "string"}}, ["recipient", "subject", "message"]),
    "convert_currency": _fn({"amount": {"type": "number"}, "from_currency": {"type": "string"},
                             "to_currency": {"type": "string"}}, ["amount", "from_currency", "to_currency"]),
    "book_flight": _fn({"origin": {"type": "string"}, "destination": {"type": "string"},
                        "departure_date": {"type": "string", "format": "date"},
                        "return_date": {"type": "string", "format": "date"},
                        "passengers": {"type": "object", "properties": {
                            "adults": {"type": "integer", "minimum": 1, "maximum": 9},
                            "children": {"type": "integer", "minimum": 0, "maximum": 8}}, "required": ["adults"]},
                        "class": {"type": "string", "enum": ["economy", "premium_economy", "business", "first"]}},
                       ["origin", "destination", "departure_date"]),
    "generate_password": _fn({"length": {"type": "integer", "description": "The length of the password"},
                              "include_symbols": {"type": "boolean"}, "include_numbers": {"type": "boolean"}},
                             ["length"]),
    "create_todo": _fn({"task": {"type": "string"}, "due_date": {"type": "string", "format": "date"},
                        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
                        "tags": {"type": "array", "items": {"type": "string"}}}, ["task"]),
    "analyze_sentiment": _fn({"text": {"type": "string"}, "language": {"type": "string", "enum": ["en", "es", "fr", "de"]},
                              "return_scores": {"type": "boolean"}}, ["text"]),
    "get_stock_price": _fn({"symbol": {"type": "string", "description": "The stock symbol, e.g. AAPL"}}, ["symbol"]),
    "order_food": _fn({"restaurant": {"type": "string"}, "items": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "properties": {"name": {"type": "string"},
                                                            "quantity": {"type": "integer", "minimum": 1}},
                           "required": ["name", "quantity"]}},
                       "delivery_address": {"type": "string"}, "tip_percent": {"type": "number", "minimum": 0, "maximum": 100}},
                      ["restaurant", "items", "delivery_address"]),
}


def rows() -> list[dict]:
    out = [{"id": f"snowplow/{k}", "category": "snowplow", "source": "written (Iglu self-describing schema shape)",
            "schema": v} for k, v in SNOWPLOW.items()]
    out += [{"id": f"glaive/{k}", "category": "glaive", "source": "written (Glaive function-call parameters shape)",
             "schema": v} for k, v in GLAIVE.items()]
    return out
