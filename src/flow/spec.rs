//! What an action's parameters look like, as data: names, types, descriptions and
//! whether they are required. The same tables feed the load-time checks (which names
//! exist, which are required), the JSON Schema of flow documents (`transbordo schema`)
//! and the tables of docs/flow-authors.md.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

/// The type of a parameter as a flow writes it. Wherever a non-string type is expected,
/// a whole-value template (`"<? $x ?>"`) is accepted too: its type is known at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    /// Any JSON value.
    Any,
    /// A string (templates allowed anywhere inside).
    String,
    /// `true` or `false`.
    Boolean,
    /// Any number.
    Number,
    /// An integer within optional bounds.
    Integer {
        /// Smallest value accepted.
        min: Option<i64>,
        /// Largest value accepted.
        max: Option<i64>,
    },
    /// A number or a non-empty string, kept as given (provider ids: `7` and `"7"`).
    Id,
    /// One of these strings.
    Enum(Vec<&'static str>),
    /// Any JSON object.
    Object,
    /// An object with these members; `additional`: other members allowed.
    Struct {
        /// The known members.
        fields: Vec<ParamSpec>,
        /// Whether other members are allowed.
        additional: bool,
    },
    /// An array whose items have this type.
    ArrayOf(Box<ParamType>),
    /// Any of these types.
    OneOf(Vec<ParamType>),
}

impl ParamType {
    /// An integer from `min` to `max`.
    pub fn integer(min: i64, max: i64) -> ParamType {
        ParamType::Integer {
            min: Some(min),
            max: Some(max),
        }
    }

    /// An array of strings.
    pub fn strings() -> ParamType {
        ParamType::ArrayOf(Box::new(ParamType::String))
    }

    /// A closed object with these members.
    pub fn fields(fields: Vec<ParamSpec>) -> ParamType {
        ParamType::Struct {
            fields,
            additional: false,
        }
    }

    /// JSON Schema (draft 2020-12) for this type. `template` is the schema of a
    /// whole-value template, allowed wherever the type is not a plain string.
    pub fn json_schema(&self, template: &Value) -> Value {
        match self {
            ParamType::Any | ParamType::String => self.plain_schema(template),
            _ => json!({ "anyOf": [self.plain_schema(template), template] }),
        }
    }

    fn plain_schema(&self, template: &Value) -> Value {
        match self {
            ParamType::Any => json!({}),
            ParamType::String => json!({ "type": "string" }),
            ParamType::Boolean => json!({ "type": "boolean" }),
            ParamType::Number => json!({ "type": "number" }),
            ParamType::Integer { min, max } => {
                let mut o = Map::new();
                o.insert("type".into(), json!("integer"));
                if let Some(m) = min {
                    o.insert("minimum".into(), json!(m));
                }
                if let Some(m) = max {
                    o.insert("maximum".into(), json!(m));
                }
                Value::Object(o)
            }
            ParamType::Id => json!({ "anyOf": [
                { "type": "number" },
                { "type": "string", "minLength": 1 }
            ] }),
            ParamType::Enum(values) => json!({ "enum": values }),
            ParamType::Object => json!({ "type": "object" }),
            ParamType::Struct { fields, additional } => {
                object_schema(fields, *additional, template)
            }
            ParamType::ArrayOf(item) => {
                json!({ "type": "array", "items": item.json_schema(template) })
            }
            ParamType::OneOf(types) => {
                json!({ "anyOf": types.iter().map(|t| t.plain_schema(template)).collect::<Vec<_>>() })
            }
        }
    }
}

/// One parameter (or member of an object parameter).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// The key.
    pub name: Cow<'static, str>,
    /// Its type.
    pub ty: ParamType,
    /// What it does, for people (schema `description`, docs/flow-authors.md).
    pub description: String,
    /// Whether it must be given.
    pub required: bool,
}

impl ParamSpec {
    /// An optional parameter.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        ty: ParamType,
        description: impl Into<String>,
    ) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty,
            description: description.into(),
            required: false,
        }
    }

    /// The same, required.
    pub fn required(mut self) -> ParamSpec {
        self.required = true;
        self
    }

    /// JSON Schema of this parameter, with its description.
    pub fn json_schema(&self, template: &Value) -> Value {
        let mut s = self.ty.json_schema(template);
        if let Value::Object(o) = &mut s {
            o.insert("description".into(), json!(self.description));
        }
        s
    }
}

/// JSON Schema of an object with these members.
pub fn object_schema(fields: &[ParamSpec], additional: bool, template: &Value) -> Value {
    let mut props = Map::new();
    for f in fields {
        props.insert(f.name.to_string(), f.json_schema(template));
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name.as_ref())
        .collect();
    let mut o = Map::new();
    o.insert("type".into(), json!("object"));
    o.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        o.insert("required".into(), json!(required));
    }
    if !additional {
        o.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(o)
}

/// How an action documents its parameters (see [`crate::actions::Action::spec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    /// What the action does.
    pub description: String,
    /// Its parameters (`before_action_messages`, which every action takes, is added by
    /// the schema).
    pub params: Vec<ParamSpec>,
    /// Whether parameters not listed are allowed.
    pub additional: bool,
    /// Sets of parameters of which at least one set must be given in full
    /// (`set_variables` needs `context` or `contact`); empty: no such rule.
    pub any_of: Vec<Vec<&'static str>>,
}

impl ActionSpec {
    /// An action that documents only its required parameters (the default for host
    /// actions): any other parameter is allowed.
    pub fn open(description: impl Into<String>, required: &[&str]) -> ActionSpec {
        ActionSpec {
            description: description.into(),
            params: required
                .iter()
                .map(|r| ParamSpec::new(r.to_string(), ParamType::Any, "").required())
                .collect(),
            additional: true,
            any_of: Vec::new(),
        }
    }
}

/// `before_action_messages`, accepted by every action.
pub fn before_action_messages() -> ParamSpec {
    ParamSpec::new(
        "before_action_messages",
        ParamType::strings(),
        "Messages sent to the user before the action runs, in order (templates allowed).",
    )
}
