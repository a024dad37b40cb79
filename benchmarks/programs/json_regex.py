"""JSON decoding by regex (~96 tokens): a city record whose shape a regex fixes; the free fields are
the model's."""
import sglang as sgl

from . import tokens

NAME = "json_regex"
CITIES = ("Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Delhi", "Quito")
STR = r'"[A-Za-z ]{1,16}"'
REGEX = (r'\{\n  "name": ' + STR + r',\n  "country": ' + STR + r',\n  "population": [1-9][0-9]{0,8},\n'
         r'  "founded": [1-9][0-9]{2,3},\n  "landmarks": \[' + STR + ", " + STR + ", " + STR + r'\],\n'
         r'  "summary": "[A-Za-z ,.]{1,80}"\n\}')


def build(scale: float = 1.0):
    json_len = tokens(96, scale) if scale < 1 else 160  # room for the whole record at full size

    @sgl.function
    def json_regex(s, city):
        s += "Here is a JSON record describing the city of " + city + ".\n"
        s += sgl.gen("record", max_tokens=json_len, temperature=0, regex=REGEX)
        return s["record"]

    return json_regex


def rows(n: int) -> list:
    return [{"city": CITIES[i % len(CITIES)] + ("" if i < len(CITIES) else f" district {i}")} for i in range(n)]
