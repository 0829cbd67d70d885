//! A compiled JsonLogic evaluator covering what flagd targeting uses: the
//! JsonLogic operators plus flagd's `fractional`, `sem_ver`, `starts_with`
//! and `ends_with`, with `$ref` to `$evaluators` resolved at load time.
//!
//! Rules are parsed and validated once into a tree of [`Node`]s; evaluation
//! walks the tree over borrowed data and allocates only where an operator
//! builds a new string or array (`cat` outside `fractional`, `map`, `merge`…).
//!
//! Error model, matching flagd and its testbed:
//! - built-in JsonLogic operators never fail: bad input gives a falsy/null value;
//! - a flagd custom operator that cannot compute its result (wrong argument
//!   types, unparsable version, no bucketing key, all weights zero…) aborts the
//!   whole targeting rule, which then resolves like a rule returning `null`:
//!   the default variant, reason `DEFAULT`. (flagd-testbed `@operator-errors`:
//!   "errors trigger a fallback to the default variant rather than silently
//!   taking the `false` branch of a conditional".)

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::context::json_type;
use crate::hash::{FxBuild, Murmur3, bucket, fast_eq, murmur3_x86_32};
use crate::semver::{OwnedVersion, SemVerOp, Version};
use crate::value::{StackStr, Val, cmp_str, compare, loose_eq, strict_eq, write_js_number};
use crate::{Bucketing, Context, cbor};

/// Deepest allowed compiled rule (after `$ref` inlining): keeps evaluation
/// recursion far from any thread's stack limit.
const MAX_DEPTH: u32 = 200;
/// Largest allowed compiled rule (after `$ref` inlining), in nodes.
const MAX_NODES: u32 = 50_000;
/// Bound on compile-time recursion through nested `$ref`s.
const MAX_RECURSION: u32 = 1_000;
/// `in` against a literal list of at least this many strings uses a hash set.
const IN_SET_MIN: usize = 9;
/// Fractional distributions up to this size compute weights on the stack.
const STACK_ENTRIES: usize = 16;

/// The evaluation aborted because a flagd custom operator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abort;

type R<T> = Result<T, Abort>;

// ---------------------------------------------------------------------------
// Compiled representation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// A literal array or object with no operation inside.
    Json(Value),
    /// An array literal with operations inside.
    Array(Vec<Node>),
    Var(Box<VarNode>),
    If(Vec<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    NotNot(Box<Node>),
    Cmp(CmpOp, Vec<Node>),
    In(Box<[Node; 2]>),
    InSet(Box<(Node, HashSet<Box<str>, FxBuild>)>),
    Cat(Vec<Node>),
    Substr(Vec<Node>),
    Arith(ArithOp, Vec<Node>),
    Merge(Vec<Node>),
    Missing(Vec<Node>),
    MissingSome(Box<[Node; 2]>),
    Iter(IterOp, Box<[Node; 2]>),
    Reduce(Box<[Node; 3]>),
    StrCmp(StrOp, Box<[Node; 2]>),
    SemVer(Box<SemVerNode>),
    Fractional(Box<FracNode>),
    /// A custom operator flagd would evaluate to null (only produced by
    /// lenient loading): aborts the rule, so the default variant is served.
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    StrictEq,
    Ne,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IterOp {
    Map,
    Filter,
    All,
    Some,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrOp {
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
pub(crate) struct VarNode {
    path: VarPath,
    default: Option<Node>,
}

#[derive(Debug, Clone)]
enum VarPath {
    Static(StaticPath),
    Dynamic(Node),
}

#[derive(Debug, Clone)]
struct StaticPath {
    root: RootKind,
    segs: Box<[Seg]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    /// `""`: the whole data object.
    Whole,
    TargetingKey,
    FlagKey,
    Timestamp,
    /// `$flagd` itself.
    Flagd,
    /// A path that can never resolve (e.g. `$flagd.flagKey.x`).
    Nothing,
    Attr,
}

#[derive(Debug, Clone)]
struct Seg {
    key: Box<str>,
    index: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct SemVerNode {
    version: Node,
    op: SemVerOp,
    target: SemVerTarget,
}

#[derive(Debug, Clone)]
enum SemVerTarget {
    Literal(OwnedVersion),
    Expr(Node),
}

/// flagd's `fractional`, in one of its three bucketings ([`Bucketing`]):
///
/// 1. the bucketing value is the first argument when it is not an entry (v1 and v2: a string,
///    or a rule returning one, `null` meaning the default; v3: any value but `null`, an error),
///    else the default: v1 and v2 `$flagd.flagKey` immediately followed by `targetingKey`, v3
///    the array `[$flagd.flagKey, targetingKey]` (the targeting key must be a non-empty string);
/// 2. `hash = murmur3_x86_32(bytes, seed 0)`, read as an unsigned 32-bit integer, over the
///    UTF-8 bytes (v1, v2) or the deterministic CBOR encoding (v3, [`crate::cbor`]);
/// 3. v2, v3: `bucket = (hash * total_weight) >> 32`, and the first entry whose cumulative
///    weight exceeds `bucket` is selected (flagd's `core/pkg/evaluator/fractional.go`, ADR
///    "High-Precision Fractional Bucketing"); v1: `|int32(hash)| / i32::MAX * 100` against
///    cumulative percentages, as flagd core did before v0.15.
///
/// Weights are integers: missing or `null` = 1, negative = 0, the sum at most `i32::MAX`.
/// Variants and weights may be rules ("nested fractional"). A rule in the first position that
/// returns an array is an entry, not a bucketing value (flagd's operators see evaluated
/// arguments, so they cannot tell the two apart).
#[derive(Debug, Clone)]
pub(crate) struct FracNode {
    bucketing: Bucketing,
    /// The explicit bucketing expression; `None` means the default bucketing value.
    bucket_by: Option<Node>,
    entries: Vec<FracEntry>,
    /// When every weight is a literal: cumulative range ends and the total.
    fixed: Option<FixedWeights>,
}

#[derive(Debug, Clone)]
struct FracEntry {
    variant: Node,
    weight: Weight,
}

#[derive(Debug, Clone)]
enum Weight {
    Lit(u32),
    Expr(Node),
}

#[derive(Debug, Clone)]
struct FixedWeights {
    ends: Box<[u64]>,
    total: u32,
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

/// How bad a problem found while loading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// The flag cannot be evaluated at all (lenient loading: `PARSE_ERROR`).
    Fatal,
    /// A flagd custom operator is misused; flagd evaluates it to null, so
    /// lenient loading compiles it to [`Node::Fail`].
    Operator,
    /// Compiled the way flagd treats it (e.g. a negative weight counts as 0).
    Lint,
}

#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) severity: Severity,
}

/// A JSON path for error messages, rendered only when a problem is found.
#[derive(Clone, Copy)]
pub(crate) enum Path<'p> {
    Root(&'p str),
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    pub(crate) fn render(&self) -> String {
        match self {
            Path::Root(s) => (*s).to_owned(),
            Path::Key(p, k) => {
                let mut s = p.render();
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
                s
            }
            Path::Index(p, i) => format!("{}[{i}]", p.render()),
        }
    }
}

/// Marker: a fatal problem was recorded.
#[derive(Debug)]
pub(crate) struct Fatal;

enum EvalState {
    InProgress,
    Done(Option<Compiled>),
}

#[derive(Clone)]
struct Compiled {
    node: Node,
    depth: u32,
    size: u32,
}

pub(crate) struct Compiler<'j> {
    evaluators: Option<&'j Map<String, Value>>,
    states: HashMap<&'j str, EvalState>,
    ref_stack: Vec<&'j str>,
    pub(crate) problems: Vec<Problem>,
    /// Nodes and deepest depth of the rule being compiled.
    size: u32,
    max_depth: u32,
    recursion: u32,
    budget_reported: bool,
    bucketing: Bucketing,
}

const OPERATORS: &str = "var, missing, missing_some, if, ?:, ==, ===, !=, !==, !, !!, or, and, >, >=, <, <=, \
                         max, min, +, -, *, /, %, map, filter, reduce, all, none, some, merge, in, cat, substr, \
                         fractional, sem_ver, starts_with, ends_with";

impl<'j> Compiler<'j> {
    pub(crate) fn new(evaluators: Option<&'j Map<String, Value>>, bucketing: Bucketing) -> Compiler<'j> {
        Compiler {
            bucketing,
            evaluators,
            states: HashMap::new(),
            ref_stack: Vec::new(),
            problems: Vec::new(),
            size: 0,
            max_depth: 0,
            recursion: 0,
            budget_reported: false,
        }
    }

    fn problem(&mut self, path: &Path<'_>, severity: Severity, message: impl Into<String>) {
        self.problems.push(Problem { path: path.render(), message: message.into(), severity });
    }

    fn fatal(&mut self, path: &Path<'_>, message: impl Into<String>) -> Fatal {
        self.problem(path, Severity::Fatal, message);
        Fatal
    }

    fn op_error(&mut self, path: &Path<'_>, message: impl Into<String>) -> Node {
        self.problem(path, Severity::Operator, message);
        Node::Fail
    }

    /// Compiles a flag's `targeting` (non-empty object) or an evaluator body.
    pub(crate) fn compile_rule(&mut self, rule: &'j Value, path: &Path<'_>) -> Result<Node, Fatal> {
        self.size = 0;
        self.max_depth = 0;
        self.budget_reported = false;
        self.compile(rule, path, 1)
    }

    /// Compiles every evaluator not yet compiled, so problems in unused ones are reported too.
    pub(crate) fn compile_all_evaluators(&mut self) {
        if let Some(evals) = self.evaluators {
            for name in evals.keys() {
                let _ = self.evaluator(name);
            }
        }
    }

    fn evaluator(&mut self, name: &'j str) -> Option<Result<Compiled, Fatal>> {
        match self.states.get(name) {
            Some(EvalState::Done(c)) => return Some(c.clone().ok_or(Fatal)),
            Some(EvalState::InProgress) => return None,
            None => {}
        }
        let (key, body) = self.evaluators?.get_key_value(name)?;
        self.states.insert(key, EvalState::InProgress);
        self.ref_stack.push(key);
        let saved = (self.size, self.max_depth, self.budget_reported);
        let root = Path::Root("$evaluators");
        let path = Path::Key(&root, key);
        let result = match body {
            Value::Object(m) if !m.is_empty() => self.compile_rule(body, &path),
            other => Err(self.fatal(
                &path,
                format!("an evaluator must be a non-empty JsonLogic rule object, found {}", describe(other)),
            )),
        };
        let compiled = result.ok().map(|node| Compiled { node, depth: self.max_depth, size: self.size });
        (self.size, self.max_depth, self.budget_reported) = saved;
        self.ref_stack.pop();
        self.states.insert(key, EvalState::Done(compiled.clone()));
        Some(compiled.ok_or(Fatal))
    }

    fn count(&mut self, path: &Path<'_>, nodes: u32, depth: u32) -> Result<(), Fatal> {
        self.size = self.size.saturating_add(nodes);
        self.max_depth = self.max_depth.max(depth);
        if self.size > MAX_NODES || self.max_depth > MAX_DEPTH {
            if !self.budget_reported {
                self.budget_reported = true;
                return Err(self.fatal(
                    path,
                    format!(
                        "rule too large: at most {MAX_NODES} operations and {MAX_DEPTH} levels of nesting \
                         (counting inlined $evaluators)"
                    ),
                ));
            }
            return Err(Fatal);
        }
        Ok(())
    }

    fn compile(&mut self, v: &'j Value, path: &Path<'_>, depth: u32) -> Result<Node, Fatal> {
        if self.recursion >= MAX_RECURSION {
            return Err(self.fatal(path, "rule nested too deeply (through $ref)"));
        }
        self.recursion += 1;
        let r = self.compile_inner(v, path, depth);
        self.recursion -= 1;
        r
    }

    fn compile_inner(&mut self, v: &'j Value, path: &Path<'_>, depth: u32) -> Result<Node, Fatal> {
        self.count(path, 1, depth)?;
        match v {
            Value::Null => Ok(Node::Null),
            Value::Bool(b) => Ok(Node::Bool(*b)),
            Value::Number(n) => Ok(Node::Num(n.as_f64().unwrap_or(f64::NAN))),
            Value::String(s) => Ok(Node::Str(s.clone())),
            Value::Array(items) => {
                let nodes = self.compile_list(items, path, depth)?;
                if nodes.iter().all(is_literal) { Ok(Node::Json(v.clone())) } else { Ok(Node::Array(nodes)) }
            }
            Value::Object(m) => {
                if m.is_empty() {
                    return Ok(Node::Json(v.clone()));
                }
                if let Some(target) = m.get("$ref") {
                    return self.compile_ref(m, target, path, depth);
                }
                if m.len() > 1 {
                    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
                    return Err(self.fatal(
                        path,
                        format!(
                            "a JsonLogic operation is an object with exactly one key (the operator), found {} keys: {}",
                            m.len(),
                            keys.join(", ")
                        ),
                    ));
                }
                let Some((op, args)) = m.iter().next() else { return Ok(Node::Null) };
                let op_path = Path::Key(path, op);
                self.compile_op(op, args, &op_path, depth)
            }
        }
    }

    fn compile_list(&mut self, items: &'j [Value], path: &Path<'_>, depth: u32) -> Result<Vec<Node>, Fatal> {
        let mut out = Vec::with_capacity(items.len());
        let mut failed = false;
        for (i, item) in items.iter().enumerate() {
            match self.compile(item, &Path::Index(path, i), depth + 1) {
                Ok(n) => out.push(n),
                Err(Fatal) => failed = true,
            }
        }
        if failed { Err(Fatal) } else { Ok(out) }
    }

    fn compile_ref(
        &mut self,
        m: &'j Map<String, Value>,
        target: &'j Value,
        path: &Path<'_>,
        depth: u32,
    ) -> Result<Node, Fatal> {
        let ref_path = Path::Key(path, "$ref");
        if m.len() > 1 {
            return Err(self.fatal(path, "an object with \"$ref\" must have no other keys"));
        }
        let Value::String(name) = target else {
            return Err(self.fatal(
                &ref_path,
                format!("$ref must be the name of an evaluator (a string), found {}", describe(target)),
            ));
        };
        if self.ref_stack.len() >= 64 {
            return Err(self.fatal(&ref_path, "$ref chain deeper than 64 evaluators"));
        }
        match self.evaluator(name) {
            None if self.evaluators.is_some_and(|e| e.contains_key(name.as_str())) => {
                let mut cycle: Vec<&str> = self.ref_stack.clone();
                if let Some(start) = cycle.iter().position(|n| *n == name.as_str()) {
                    cycle.drain(..start);
                }
                cycle.push(name);
                Err(self.fatal(&ref_path, format!("$ref cycle: {}", cycle.join(" -> "))))
            }
            None => {
                let known: Vec<&str> =
                    self.evaluators.map(|e| e.keys().map(String::as_str).collect()).unwrap_or_default();
                let hint = if known.is_empty() {
                    "no $evaluators are defined".to_owned()
                } else {
                    format!("defined evaluators: {}", known.join(", "))
                };
                Err(self.fatal(&ref_path, format!("$ref to unknown evaluator \"{name}\" ({hint})")))
            }
            Some(Err(Fatal)) => Err(self
                .fatal(&ref_path, format!("$ref to evaluator \"{name}\", which is invalid (see $evaluators.{name})"))),
            Some(Ok(c)) => {
                // The first node was already counted for the `$ref` object itself.
                self.count(&ref_path, c.size.saturating_sub(1), depth - 1 + c.depth)?;
                Ok(c.node)
            }
        }
    }

    fn compile_op(&mut self, op: &'j str, args: &'j Value, path: &Path<'_>, depth: u32) -> Result<Node, Fatal> {
        let list: &'j [Value] = match args {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        let is_array = args.is_array();
        // Path of argument i: `op[i]` when given as an array, `op` otherwise.
        macro_rules! arg_path {
            ($i:expr) => {
                if is_array { Path::Index(path, $i) } else { *path }
            };
        }
        let n = list.len();
        let arity = |c: &mut Self, ok: bool, expected: &str| -> Result<(), Fatal> {
            if ok {
                Ok(())
            } else {
                Err(c
                    .fatal(path, format!("{op} takes {expected}, found {n} argument{}", if n == 1 { "" } else { "s" })))
            }
        };
        let node = match op {
            "var" => return self.compile_var(list, is_array, path, depth),
            "if" | "?:" => {
                if op == "?:" {
                    arity(self, n == 3, "3 arguments")?;
                }
                Node::If(self.compile_args(list, is_array, path, depth)?)
            }
            "and" | "or" => {
                let a = self.compile_args(list, is_array, path, depth)?;
                if op == "and" { Node::And(a) } else { Node::Or(a) }
            }
            "!" | "!!" => {
                arity(self, n == 1, "1 argument")?;
                let a = self.compile(&list[0], &arg_path!(0), depth + 1)?;
                if op == "!" { Node::Not(Box::new(a)) } else { Node::NotNot(Box::new(a)) }
            }
            "==" | "===" | "!=" | "!==" | ">" | ">=" | "<" | "<=" => {
                let cmp = match op {
                    "==" => CmpOp::Eq,
                    "===" => CmpOp::StrictEq,
                    "!=" => CmpOp::Ne,
                    "!==" => CmpOp::StrictNe,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    "<" => CmpOp::Lt,
                    _ => CmpOp::Le,
                };
                if matches!(cmp, CmpOp::Lt | CmpOp::Le) {
                    arity(self, n == 2 || n == 3, "2 arguments (or 3 for \"between\")")?;
                } else {
                    arity(self, n == 2, "2 arguments")?;
                }
                Node::Cmp(cmp, self.compile_args(list, is_array, path, depth)?)
            }
            "in" => {
                arity(self, n == 2, "2 arguments (a value and a string or array)")?;
                let mut a = self.compile_args(list, is_array, path, depth)?;
                let hay = a.pop();
                let needle = a.pop();
                match (needle, hay) {
                    (Some(needle), Some(Node::Json(Value::Array(items))))
                        if items.len() >= IN_SET_MIN && items.iter().all(Value::is_string) =>
                    {
                        let set = items.iter().filter_map(Value::as_str).map(Box::from).collect();
                        Node::InSet(Box::new((needle, set)))
                    }
                    (Some(needle), Some(hay)) => Node::In(Box::new([needle, hay])),
                    _ => Node::Null,
                }
            }
            "cat" => Node::Cat(self.compile_args(list, is_array, path, depth)?),
            "substr" => {
                arity(self, n == 2 || n == 3, "2 or 3 arguments (string, start[, length])")?;
                Node::Substr(self.compile_args(list, is_array, path, depth)?)
            }
            "+" | "-" | "*" | "/" | "%" | "min" | "max" => {
                let a = match op {
                    "+" => ArithOp::Add,
                    "-" => ArithOp::Sub,
                    "*" => ArithOp::Mul,
                    "/" => ArithOp::Div,
                    "%" => ArithOp::Rem,
                    "min" => ArithOp::Min,
                    _ => ArithOp::Max,
                };
                match a {
                    ArithOp::Sub => arity(self, n == 1 || n == 2, "1 or 2 arguments")?,
                    ArithOp::Div | ArithOp::Rem => arity(self, n == 2, "2 arguments")?,
                    _ => arity(self, n >= 1, "at least 1 argument")?,
                }
                Node::Arith(a, self.compile_args(list, is_array, path, depth)?)
            }
            "merge" => Node::Merge(self.compile_args(list, is_array, path, depth)?),
            "missing" => Node::Missing(self.compile_args(list, is_array, path, depth)?),
            "missing_some" => {
                arity(self, n == 2, "2 arguments (minimum count, list of keys)")?;
                Node::MissingSome(self.compile_pair(list, path, depth)?)
            }
            "map" | "filter" | "all" | "some" | "none" => {
                arity(self, n == 2, "2 arguments (an array and a rule applied to each item)")?;
                let it = match op {
                    "map" => IterOp::Map,
                    "filter" => IterOp::Filter,
                    "all" => IterOp::All,
                    "some" => IterOp::Some,
                    _ => IterOp::None,
                };
                Node::Iter(it, self.compile_pair(list, path, depth)?)
            }
            "reduce" => {
                arity(self, n == 2 || n == 3, "2 or 3 arguments (array, rule, initial value)")?;
                let mut a = self.compile_args(list, is_array, path, depth)?;
                let init = if a.len() == 3 { a.pop().unwrap_or(Node::Null) } else { Node::Null };
                let rule = a.pop().unwrap_or(Node::Null);
                let arr = a.pop().unwrap_or(Node::Null);
                Node::Reduce(Box::new([arr, rule, init]))
            }
            "starts_with" | "ends_with" => {
                let a = self.compile_args(list, is_array, path, depth)?;
                if n != 2 {
                    return Ok(self.op_error(
                        path,
                        format!(
                            "{op} takes 2 arguments (a string and a {}), found {n}",
                            if op == "starts_with" { "prefix" } else { "suffix" }
                        ),
                    ));
                }
                for (i, arg) in list.iter().enumerate() {
                    if is_literal_json(arg) && !arg.is_string() {
                        return Ok(
                            self.op_error(&arg_path!(i), format!("{op} compares strings, found {}", describe(arg)))
                        );
                    }
                }
                let mut a = a;
                let second = a.pop().unwrap_or(Node::Null);
                let first = a.pop().unwrap_or(Node::Null);
                let sop = if op == "starts_with" { StrOp::StartsWith } else { StrOp::EndsWith };
                Node::StrCmp(sop, Box::new([first, second]))
            }
            "sem_ver" => return self.compile_semver(list, is_array, path, depth),
            "fractional" => return self.compile_fractional(list, is_array, path, depth),
            _ => {
                return Err(self.fatal(path, format!("unknown operator \"{op}\"; supported operators: {OPERATORS}")));
            }
        };
        Ok(node)
    }

    fn compile_args(
        &mut self,
        list: &'j [Value],
        is_array: bool,
        path: &Path<'_>,
        depth: u32,
    ) -> Result<Vec<Node>, Fatal> {
        if is_array {
            self.compile_list(list, path, depth)
        } else {
            Ok(vec![self.compile(&list[0], path, depth + 1)?])
        }
    }

    fn compile_pair(&mut self, list: &'j [Value], path: &Path<'_>, depth: u32) -> Result<Box<[Node; 2]>, Fatal> {
        let a = self.compile(&list[0], &Path::Index(path, 0), depth + 1);
        let b = self.compile(&list[1], &Path::Index(path, 1), depth + 1);
        Ok(Box::new([a?, b?]))
    }

    fn compile_var(&mut self, list: &'j [Value], is_array: bool, path: &Path<'_>, depth: u32) -> Result<Node, Fatal> {
        if list.len() > 2 {
            return Err(
                self.fatal(path, format!("var takes a path and an optional default, found {} arguments", list.len()))
            );
        }
        let p0 = if is_array { Path::Index(path, 0) } else { *path };
        let var_path = match list.first() {
            None | Some(Value::Null) => VarPath::Static(StaticPath { root: RootKind::Whole, segs: Box::new([]) }),
            Some(Value::String(s)) => VarPath::Static(self.static_path(s, &p0)?),
            Some(Value::Number(n)) => VarPath::Static(self.static_path(&n.to_string(), &p0)?),
            Some(obj @ Value::Object(_)) => VarPath::Dynamic(self.compile(obj, &p0, depth + 1)?),
            Some(other) => {
                return Err(self
                    .fatal(&p0, format!("var path must be a string, a number or a rule, found {}", describe(other))));
            }
        };
        let default = match list.get(1) {
            Some(d) => Some(self.compile(d, &Path::Index(path, 1), depth + 1)?),
            None => None,
        };
        Ok(Node::Var(Box::new(VarNode { path: var_path, default })))
    }

    fn static_path(&mut self, s: &str, path: &Path<'_>) -> Result<StaticPath, Fatal> {
        let p = parse_path(s);
        if p.root == RootKind::Nothing && s.starts_with("$flagd.") && s.matches('.').count() == 1 {
            self.problem(
                path,
                Severity::Lint,
                format!(
                    "unknown flagd property \"{s}\": flagd provides $flagd.flagKey and $flagd.timestamp (it reads as null)"
                ),
            );
        }
        Ok(p)
    }

    fn compile_semver(
        &mut self,
        list: &'j [Value],
        is_array: bool,
        path: &Path<'_>,
        depth: u32,
    ) -> Result<Node, Fatal> {
        let args = self.compile_args(list, is_array, path, depth)?;
        if list.len() != 3 {
            return Ok(self.op_error(
                path,
                format!("sem_ver takes 3 arguments (version, operator, version), found {}", list.len()),
            ));
        }
        let op_path = Path::Index(path, 1);
        let op = match &list[1] {
            Value::String(s) => match SemVerOp::parse(s) {
                Some(op) => op,
                None => {
                    return Ok(self.op_error(
                        &op_path,
                        format!("invalid sem_ver operator \"{s}\"; expected one of {}", SemVerOp::ALL),
                    ));
                }
            },
            other => {
                return Ok(self.op_error(
                    &op_path,
                    format!(
                        "the sem_ver operator must be a literal string ({}), found {}",
                        SemVerOp::ALL,
                        describe(other)
                    ),
                ));
            }
        };
        for i in [0, 2] {
            let arg = &list[i];
            if !is_literal_json(arg) {
                continue;
            }
            let text = match arg {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Ok(self.op_error(
                        &Path::Index(path, i),
                        format!("sem_ver compares versions (strings), found {}", describe(other)),
                    ));
                }
            };
            if Version::parse(&text).is_none() {
                return Ok(self.op_error(
                    &Path::Index(path, i),
                    format!(
                        "\"{text}\" is not a semantic version (expected MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD])"
                    ),
                ));
            }
        }
        let mut args = args;
        let target_node = args.pop().unwrap_or(Node::Null);
        args.pop();
        let version = args.pop().unwrap_or(Node::Null);
        let target = match &list[2] {
            Value::String(s) => match OwnedVersion::parse(s) {
                Some(v) => SemVerTarget::Literal(v),
                None => SemVerTarget::Expr(target_node),
            },
            _ => SemVerTarget::Expr(target_node),
        };
        Ok(Node::SemVer(Box::new(SemVerNode { version, op, target })))
    }

    fn compile_fractional(
        &mut self,
        list: &'j [Value],
        is_array: bool,
        path: &Path<'_>,
        depth: u32,
    ) -> Result<Node, Fatal> {
        if !is_array {
            return Ok(self.op_error(
                path,
                "fractional takes an array: an optional bucketing value, then [variant, weight] entries",
            ));
        }
        // The first argument is the bucketing value unless it is itself an entry.
        let v3 = self.bucketing == Bucketing::V3;
        let (bucket_by, entries_from) = match list.first() {
            None => {
                return Ok(self.op_error(path, "fractional needs at least one [variant, weight] entry"));
            }
            Some(Value::Array(_)) => (None, 0),
            Some(Value::Null) if v3 => {
                return Ok(self.op_error(
                    &Path::Index(path, 0),
                    "a null bucketing value is an error in fractional bucketing v3: the rule falls back to the \
                     default variant (leave the bucketing value out to bucket by the targeting key)",
                ));
            }
            Some(Value::Null) => (None, 1),
            Some(v @ (Value::String(_) | Value::Object(_))) => {
                (Some(self.compile(v, &Path::Index(path, 0), depth + 1)?), 1)
            }
            Some(v @ (Value::Bool(_) | Value::Number(_))) if v3 => {
                (Some(self.compile(v, &Path::Index(path, 0), depth + 1)?), 1)
            }
            Some(other) => {
                return Ok(self.op_error(
                    &Path::Index(path, 0),
                    format!(
                        "the fractional bucketing value must be a string or a rule returning one in bucketing {}, \
                         found {}",
                        self.bucketing,
                        describe(other)
                    ),
                ));
            }
        };
        let entries_json = &list[entries_from..];
        if entries_json.is_empty() {
            return Ok(self.op_error(path, "fractional needs at least one [variant, weight] entry"));
        }
        let mut entries = Vec::with_capacity(entries_json.len());
        let mut op_failed = false;
        let mut fatal = false;
        for (k, e) in entries_json.iter().enumerate() {
            let i = k + entries_from;
            let ep = Path::Index(path, i);
            let Value::Array(pair) = e else {
                self.problem(
                    &ep,
                    Severity::Operator,
                    format!("a fractional entry is [variant, weight] or [variant], found {}", describe(e)),
                );
                op_failed = true;
                continue;
            };
            if pair.is_empty() || pair.len() > 2 {
                self.problem(
                    &ep,
                    Severity::Operator,
                    format!("a fractional entry is [variant, weight] or [variant], found {} elements", pair.len()),
                );
                op_failed = true;
                continue;
            }
            let vp = Path::Index(&ep, 0);
            let variant = match &pair[0] {
                Value::Array(_) => {
                    self.problem(
                        &vp,
                        Severity::Operator,
                        "a fractional variant must be a string, boolean, number, null or a rule, found an array",
                    );
                    op_failed = true;
                    continue;
                }
                v => match self.compile(v, &vp, depth + 2) {
                    Ok(n) => n,
                    Err(Fatal) => {
                        fatal = true;
                        continue;
                    }
                },
            };
            let wp = Path::Index(&ep, 1);
            let weight = match pair.get(1) {
                None | Some(Value::Null) => Weight::Lit(1),
                Some(Value::Number(num)) => match literal_weight(num.as_f64().unwrap_or(f64::NAN)) {
                    Ok(w) => Weight::Lit(w),
                    Err(WeightError::Negative) => {
                        self.problem(
                            &wp,
                            Severity::Lint,
                            "a fractional weight must not be negative (flagd counts it as 0)",
                        );
                        Weight::Lit(0)
                    }
                    Err(e) => {
                        self.problem(&wp, Severity::Operator, e.message());
                        op_failed = true;
                        continue;
                    }
                },
                Some(obj @ Value::Object(_)) => match self.compile(obj, &wp, depth + 2) {
                    Ok(n) => Weight::Expr(n),
                    Err(Fatal) => {
                        fatal = true;
                        continue;
                    }
                },
                Some(other) => {
                    self.problem(
                        &wp,
                        Severity::Operator,
                        format!("a fractional weight must be an integer or a rule, found {}", describe(other)),
                    );
                    op_failed = true;
                    continue;
                }
            };
            entries.push(FracEntry { variant, weight });
        }
        if fatal {
            return Err(Fatal);
        }
        if op_failed {
            return Ok(Node::Fail);
        }
        let fixed = if entries.iter().all(|e| matches!(e.weight, Weight::Lit(_))) {
            let mut ends = Vec::with_capacity(entries.len());
            let mut total: u64 = 0;
            for e in &entries {
                if let Weight::Lit(w) = e.weight {
                    total += u64::from(w);
                }
                ends.push(total);
            }
            // (A rule in first place other than `var` or `cat` may return an entry with a weight.)
            let may_add_entry = is_rule(&list[0]) && !matches!(bucket_by, Some(Node::Var(_) | Node::Cat(_)));
            if total == 0 && !may_add_entry {
                return Ok(self.op_error(path, "every fractional weight is 0: no variant can be selected"));
            }
            if total > i32::MAX as u64 {
                return Ok(self.op_error(
                    path,
                    format!("the fractional weights sum to {total}, more than the maximum {}", i32::MAX),
                ));
            }
            Some(FixedWeights { ends: ends.into_boxed_slice(), total: total as u32 })
        } else {
            None
        };
        Ok(Node::Fractional(Box::new(FracNode { bucketing: self.bucketing, bucket_by, entries, fixed })))
    }
}

enum WeightError {
    Negative,
    NotInteger,
    TooLarge,
}

impl WeightError {
    fn message(&self) -> String {
        match self {
            WeightError::Negative => "a fractional weight must not be negative".to_owned(),
            WeightError::NotInteger => "a fractional weight must be an integer".to_owned(),
            WeightError::TooLarge => format!("a fractional weight must be at most {}", i32::MAX),
        }
    }
}

fn literal_weight(w: f64) -> Result<u32, WeightError> {
    if !w.is_finite() || w.fract() != 0.0 {
        return Err(WeightError::NotInteger);
    }
    if w < 0.0 {
        return Err(WeightError::Negative);
    }
    if w > f64::from(i32::MAX) {
        return Err(WeightError::TooLarge);
    }
    Ok(w as u32)
}

/// A weight computed at evaluation time; negatives count as 0 (as in flagd).
fn runtime_weight(v: &Val<'_>) -> R<u32> {
    match v {
        Val::Null => Ok(1),
        Val::Num(n) => match literal_weight(*n) {
            Ok(w) => Ok(w),
            Err(WeightError::Negative) => Ok(0),
            Err(_) => Err(Abort),
        },
        _ => Err(Abort),
    }
}

/// True for a JsonLogic operation (an object with a key), whose value is known only when evaluated.
fn is_rule(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty())
}

fn is_literal(n: &Node) -> bool {
    matches!(n, Node::Null | Node::Bool(_) | Node::Num(_) | Node::Str(_) | Node::Json(_))
}

/// True when the JSON value contains no operation (so its value is known at load time).
fn is_literal_json(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.iter().all(is_literal_json),
        _ => true,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("the boolean {b}"),
        other => json_type(other).to_owned(),
    }
}

fn parse_path(s: &str) -> StaticPath {
    if s.is_empty() {
        return StaticPath { root: RootKind::Whole, segs: Box::new([]) };
    }
    let segs: Box<[Seg]> =
        s.split('.').map(|k| Seg { key: k.into(), index: k.parse::<usize>().ok() }).collect::<Vec<_>>().into();
    let root = match (segs[0].key.as_ref(), segs.len()) {
        ("targetingKey", 1) => RootKind::TargetingKey,
        ("$flagd", 1) => RootKind::Flagd,
        ("$flagd", 2) => match segs[1].key.as_ref() {
            "flagKey" => RootKind::FlagKey,
            "timestamp" => RootKind::Timestamp,
            _ => RootKind::Nothing,
        },
        ("$flagd", _) => RootKind::Nothing,
        _ => RootKind::Attr,
    };
    StaticPath { root, segs }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// What a rule is evaluated against.
pub(crate) struct Env<'a> {
    pub(crate) flag_key: &'a String,
    pub(crate) ctx: &'a Context,
}

/// The data `var` reads: the context (`None`), or the item of a
/// `map`/`filter`/… loop. One pointer, so it is passed in a register.
#[derive(Clone, Copy)]
struct Scope<'s, 'a>(Option<&'s Frame<'s, 'a>>);

enum Frame<'s, 'a> {
    Item(&'s Val<'a>),
    Reduce { current: &'s Val<'a>, accumulator: &'s Val<'a> },
}

impl Scope<'_, '_> {
    const ROOT: Scope<'static, 'static> = Scope(None);
}

fn walk_json<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for s in segs {
        v = match v {
            Value::Object(m) => m.get(s.key.as_ref())?,
            Value::Array(a) => a.get(s.index?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// The string a `var` names in the root context, if it is one; `None` sends
/// the caller to the general path.
#[inline(always)]
fn root_str<'a>(p: &StaticPath, env: &Env<'a>) -> Option<&'a str> {
    match p.root {
        RootKind::Attr => match env.ctx.attribute(&p.segs[0].key) {
            Some(Value::String(s)) if p.segs.len() == 1 => Some(s),
            Some(v) => walk_json(v, &p.segs[1..]).and_then(Value::as_str),
            None => None,
        },
        RootKind::TargetingKey => env.ctx.targeting_key.as_deref(),
        RootKind::FlagKey => Some(env.flag_key),
        _ => None,
    }
}

/// Converts a JSON value that does not live for `'a` into a `Val`.
fn owned_val<'a>(v: &Value) -> Val<'a> {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Val::String(Box::new(s.clone())),
        Value::Array(a) => Val::List(Box::new(a.iter().map(owned_val).collect())),
        Value::Object(m) => Val::Object(Box::new(m.clone())),
    }
}

fn walk_val<'a>(v: &Val<'a>, segs: &[Seg]) -> Val<'a> {
    let Some((first, rest)) = segs.split_first() else { return v.clone() };
    match v {
        Val::Json(j) => walk_json(j, segs).map(Val::from_json).unwrap_or(Val::Null),
        Val::List(l) => match first.index.and_then(|i| l.get(i)) {
            Some(item) => walk_val(item, rest),
            None => Val::Null,
        },
        Val::Object(m) => match m.get(first.key.as_ref()).and_then(|x| walk_json(x, rest)) {
            Some(x) => owned_val(x),
            None => Val::Null,
        },
        _ => Val::Null,
    }
}

fn flagd_object(env: &Env<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("flagKey".into(), Value::String(env.flag_key.clone()));
    m.insert("timestamp".into(), env.ctx.timestamp.map(Value::from).unwrap_or(Value::Null));
    m
}

#[inline(always)]
fn root_lookup<'a>(p: &StaticPath, env: &Env<'a>) -> Val<'a> {
    let ctx = env.ctx;
    match p.root {
        RootKind::Attr => match ctx.attribute(&p.segs[0].key).and_then(|v| walk_json(v, &p.segs[1..])) {
            Some(v) => Val::from_json(v),
            None => Val::Null,
        },
        RootKind::TargetingKey => match &ctx.targeting_key {
            Some(k) => Val::Str(k),
            // A targetingKey that is not a string is kept among the attributes.
            None => ctx.attribute("targetingKey").map(Val::from_json).unwrap_or(Val::Null),
        },
        RootKind::FlagKey => Val::Str(env.flag_key),
        RootKind::Timestamp => ctx.timestamp.map(|t| Val::Num(t as f64)).unwrap_or(Val::Null),
        RootKind::Flagd => Val::Object(Box::new(flagd_object(env))),
        RootKind::Nothing => Val::Null,
        RootKind::Whole => {
            let mut m: Map<String, Value> = ctx.attributes().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            if let Some(k) = &ctx.targeting_key {
                m.insert("targetingKey".into(), Value::String(k.clone()));
            }
            m.insert("$flagd".into(), Value::Object(flagd_object(env)));
            Val::Object(Box::new(m))
        }
    }
}

#[inline(always)]
fn lookup<'a>(p: &StaticPath, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match scope.0 {
        None => root_lookup(p, env),
        Some(Frame::Item(item)) => walk_val(item, &p.segs),
        Some(Frame::Reduce { current, accumulator }) => match p.segs.split_first() {
            None => {
                let mut m = Map::new();
                m.insert("current".into(), current.to_json());
                m.insert("accumulator".into(), accumulator.to_json());
                Val::Object(Box::new(m))
            }
            Some((first, rest)) => match first.key.as_ref() {
                "current" => walk_val(current, rest),
                "accumulator" => walk_val(accumulator, rest),
                _ => Val::Null,
            },
        },
    }
}

fn finite(n: f64) -> Val<'static> {
    if n.is_finite() { Val::Num(n) } else { Val::Null }
}

/// Calls `f` for each item of an array value (nothing for non-arrays);
/// `f` returns `false` to stop early.
fn for_each_item<'a>(arr: &Val<'a>, mut f: impl FnMut(&Val<'a>) -> R<bool>) -> R<()> {
    match arr {
        Val::Json(Value::Array(a)) => {
            for x in a {
                if !f(&Val::from_json(x))? {
                    break;
                }
            }
        }
        Val::List(l) => {
            for x in l.iter() {
                if !f(x)? {
                    break;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl Node {
    /// Evaluates a targeting rule against the context.
    pub(crate) fn evaluate<'a>(&'a self, env: &Env<'a>) -> R<Val<'a>> {
        self.eval(env, Scope::ROOT)
    }

    /// Evaluates an operand: literals and plain `var`s are handled inline in
    /// the caller, which keeps their values in registers.
    #[inline(always)]
    fn value<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<Val<'a>> {
        match self {
            Node::Str(s) => Ok(Val::Str(s)),
            Node::Num(n) => Ok(Val::Num(*n)),
            Node::Bool(b) => Ok(Val::Bool(*b)),
            Node::Null => Ok(Val::Null),
            Node::Var(v) => match (&v.path, &v.default) {
                (VarPath::Static(p), None) => Ok(lookup(p, env, scope)),
                _ => self.eval(env, scope),
            },
            _ => self.eval(env, scope),
        }
    }

    /// A string literal, or a plain `var` naming a string in the root context:
    /// returned as a `&str` (in registers) without building a `Val`.
    #[inline(always)]
    fn str_fast<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<&'a str> {
        match self {
            Node::Str(s) => Some(s),
            Node::Var(v) if scope.0.is_none() && v.default.is_none() => match &v.path {
                VarPath::Static(p) => root_str(p, env),
                VarPath::Dynamic(_) => None,
            },
            _ => None,
        }
    }

    /// The truthiness of the node's value, computed without building the
    /// value where the operator yields a boolean anyway.
    fn truthy<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
        match self {
            Node::Bool(b) => Ok(*b),
            Node::Cmp(op, args) => self.cmp(*op, args, env, scope),
            Node::Not(a) => Ok(!a.truthy(env, scope)?),
            Node::NotNot(a) => a.truthy(env, scope),
            Node::And(args) => {
                for a in args {
                    if !a.truthy(env, scope)? {
                        return Ok(false);
                    }
                }
                Ok(!args.is_empty())
            }
            Node::Or(args) => {
                for a in args {
                    if a.truthy(env, scope)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Node::In(ab) => in_op(ab, env, scope),
            Node::InSet(b) => in_set(b, env, scope),
            Node::StrCmp(op, ab) => str_cmp(*op, ab, env, scope),
            Node::SemVer(s) => s.eval(env, scope),
            _ => Ok(self.value(env, scope)?.truthy()),
        }
    }

    fn cmp<'a>(&'a self, op: CmpOp, args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
        use std::cmp::Ordering::*;
        if let (2, Some(a), Some(b)) = (args.len(), args[0].str_fast(env, scope), args[1].str_fast(env, scope)) {
            return Ok(match op {
                CmpOp::Eq | CmpOp::StrictEq => fast_eq(a, b),
                CmpOp::Ne | CmpOp::StrictNe => !fast_eq(a, b),
                CmpOp::Gt => cmp_str(a, b) == Greater,
                CmpOp::Ge => cmp_str(a, b) != Less,
                CmpOp::Lt => cmp_str(a, b) == Less,
                CmpOp::Le => cmp_str(a, b) != Greater,
            });
        }
        let a = args[0].value(env, scope)?;
        let b = args[1].value(env, scope)?;
        Ok(match op {
            CmpOp::Eq => loose_eq(&a, &b),
            CmpOp::Ne => !loose_eq(&a, &b),
            CmpOp::StrictEq => strict_eq(&a, &b),
            CmpOp::StrictNe => !strict_eq(&a, &b),
            CmpOp::Gt => compare(&a, &b) == Some(Greater),
            CmpOp::Ge => matches!(compare(&a, &b), Some(Greater | Equal)),
            CmpOp::Lt | CmpOp::Le => {
                let ok = |o: Option<std::cmp::Ordering>| match op {
                    CmpOp::Lt => o == Some(Less),
                    _ => matches!(o, Some(Less | Equal)),
                };
                match args.get(2) {
                    None => ok(compare(&a, &b)),
                    Some(c) => {
                        let c = c.value(env, scope)?;
                        ok(compare(&a, &b)) && ok(compare(&b, &c))
                    }
                }
            }
        })
    }

    fn eval<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<Val<'a>> {
        Ok(match self {
            Node::Null => Val::Null,
            Node::Bool(b) => Val::Bool(*b),
            Node::Num(n) => Val::Num(*n),
            Node::Str(s) => Val::Str(s),
            Node::Json(v) => Val::from_json(v),
            Node::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for n in items {
                    out.push(n.eval(env, scope)?);
                }
                Val::List(Box::new(out))
            }
            Node::Var(v) => {
                let found = match &v.path {
                    VarPath::Static(p) => lookup(p, env, scope),
                    VarPath::Dynamic(n) => {
                        let key = n.eval(env, scope)?;
                        let text = match &key {
                            Val::Null => String::new(),
                            other => {
                                let mut s = String::new();
                                other.write_js(&mut s, true);
                                s
                            }
                        };
                        lookup(&parse_path(&text), env, scope)
                    }
                };
                match (&found, &v.default) {
                    (Val::Null, Some(d)) => d.eval(env, scope)?,
                    _ => found,
                }
            }
            Node::If(args) => {
                let mut i = 0;
                while i + 1 < args.len() {
                    if args[i].truthy(env, scope)? {
                        return args[i + 1].value(env, scope);
                    }
                    i += 2;
                }
                match args.get(i) {
                    Some(last) => last.value(env, scope)?,
                    None => Val::Null,
                }
            }
            Node::And(args) => {
                let mut last = Val::Null;
                for a in args {
                    last = a.eval(env, scope)?;
                    if !last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Or(args) => {
                let mut last = Val::Null;
                for a in args {
                    last = a.eval(env, scope)?;
                    if last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Not(a) => Val::Bool(!a.truthy(env, scope)?),
            Node::NotNot(a) => Val::Bool(a.truthy(env, scope)?),
            Node::Cmp(op, args) => Val::Bool(self.cmp(*op, args, env, scope)?),
            Node::In(ab) => Val::Bool(in_op(ab, env, scope)?),
            Node::InSet(b) => Val::Bool(in_set(b, env, scope)?),
            Node::Cat(args) => {
                let mut s = String::new();
                for a in args {
                    a.value(env, scope)?.write_js(&mut s, true);
                }
                Val::String(Box::new(s))
            }
            Node::Substr(args) => {
                let source = args[0].eval(env, scope)?.to_js_string();
                let start = to_integer(args[1].eval(env, scope)?.to_number());
                let len = match args.get(2) {
                    Some(n) => Some(to_integer(n.eval(env, scope)?.to_number())),
                    None => None,
                };
                Val::String(Box::new(substr(&source, start, len)))
            }
            Node::Arith(op, args) => self.arith(*op, args, env, scope)?,
            Node::Merge(args) => {
                let mut out = Vec::new();
                for a in args {
                    let v = a.eval(env, scope)?;
                    match v {
                        Val::Json(Value::Array(items)) => out.extend(items.iter().map(Val::from_json)),
                        Val::List(items) => out.extend(*items),
                        other => out.push(other),
                    }
                }
                Val::List(Box::new(out))
            }
            Node::Missing(args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(env, scope)?);
                }
                let keys = match vals.first() {
                    Some(first) if first.array_len().is_some() => first.array_items(),
                    _ => vals,
                };
                Val::List(Box::new(missing(&keys, env, scope)))
            }
            Node::MissingSome(ab) => {
                let need = ab[0].eval(env, scope)?.to_number();
                let options = ab[1].eval(env, scope)?.array_items();
                let absent = missing(&options, env, scope);
                let found = (options.len() - absent.len()) as f64;
                Val::List(Box::new(if found >= need { Vec::new() } else { absent }))
            }
            Node::Iter(op, ab) => {
                let data = ab[0].eval(env, scope)?;
                let rule = &ab[1];
                match op {
                    IterOp::Map => {
                        let mut out = Vec::with_capacity(data.array_len().unwrap_or(0));
                        for_each_item(&data, |it| {
                            out.push(rule.eval(env, Scope(Some(&Frame::Item(it))))?);
                            Ok(true)
                        })?;
                        Val::List(Box::new(out))
                    }
                    IterOp::Filter => {
                        let mut out = Vec::new();
                        for_each_item(&data, |it| {
                            if rule.eval(env, Scope(Some(&Frame::Item(it))))?.truthy() {
                                out.push(it.clone());
                            }
                            Ok(true)
                        })?;
                        Val::List(Box::new(out))
                    }
                    IterOp::All => {
                        if data.array_len().unwrap_or(0) == 0 {
                            return Ok(Val::Bool(false));
                        }
                        let mut all = true;
                        for_each_item(&data, |it| {
                            all = rule.eval(env, Scope(Some(&Frame::Item(it))))?.truthy();
                            Ok(all)
                        })?;
                        Val::Bool(all)
                    }
                    IterOp::Some | IterOp::None => {
                        let mut any = false;
                        for_each_item(&data, |it| {
                            any = rule.eval(env, Scope(Some(&Frame::Item(it))))?.truthy();
                            Ok(!any)
                        })?;
                        Val::Bool(if *op == IterOp::Some { any } else { !any })
                    }
                }
            }
            Node::Reduce(abc) => {
                let data = abc[0].eval(env, scope)?;
                let mut acc = abc[2].eval(env, scope)?;
                for_each_item(&data, |it| {
                    let frame = Frame::Reduce { current: it, accumulator: &acc };
                    acc = abc[1].eval(env, Scope(Some(&frame)))?;
                    Ok(true)
                })?;
                acc
            }
            Node::StrCmp(op, ab) => Val::Bool(str_cmp(*op, ab, env, scope)?),
            Node::SemVer(s) => Val::Bool(s.eval(env, scope)?),
            Node::Fractional(f) => f.eval(env, scope)?,
            Node::Fail => return Err(Abort),
        })
    }

    fn arith<'a>(&'a self, op: ArithOp, args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> R<Val<'a>> {
        let num = |n: &'a Node| -> R<f64> { Ok(n.eval(env, scope)?.to_number()) };
        Ok(match op {
            ArithOp::Add => {
                let mut s = 0.0;
                for a in args {
                    s += num(a)?;
                }
                finite(s)
            }
            ArithOp::Mul => {
                let mut p = 1.0;
                for a in args {
                    p *= num(a)?;
                }
                finite(p)
            }
            ArithOp::Sub => match args {
                [a] => finite(-num(a)?),
                [a, b] => finite(num(a)? - num(b)?),
                _ => Val::Null,
            },
            ArithOp::Div => finite(num(&args[0])? / num(&args[1])?),
            ArithOp::Rem => finite(num(&args[0])? % num(&args[1])?),
            ArithOp::Min | ArithOp::Max => {
                let mut acc: Option<f64> = None;
                for a in args {
                    let x = num(a)?;
                    if x.is_nan() {
                        return Ok(Val::Null);
                    }
                    acc = Some(match acc {
                        None => x,
                        Some(m) if op == ArithOp::Min => m.min(x),
                        Some(m) => m.max(x),
                    });
                }
                acc.map(finite).unwrap_or(Val::Null)
            }
        })
    }
}

fn in_op<'a>(ab: &'a [Node; 2], env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
    if let Some(needle) = ab[0].str_fast(env, scope) {
        if let Node::Json(Value::Array(items)) = &ab[1] {
            return Ok(items.iter().any(|x| x.as_str().is_some_and(|s| fast_eq(s, needle))));
        }
        if let Some(hay) = ab[1].str_fast(env, scope) {
            return Ok(contains(hay, needle));
        }
    }
    let needle = ab[0].value(env, scope)?;
    let hay = ab[1].value(env, scope)?;
    Ok(match &hay {
        Val::Str(_) | Val::String(_) => {
            let h = hay.as_str().unwrap_or("");
            match needle.as_str() {
                Some(n) => h.contains(n),
                None => h.contains(needle.to_js_string().as_str()),
            }
        }
        Val::Json(Value::Array(items)) => items.iter().any(|x| strict_eq(&needle, &Val::from_json(x))),
        Val::List(items) => items.iter().any(|x| strict_eq(&needle, x)),
        _ => false,
    })
}

/// Substring test; a plain scan beats building a two-way searcher for the
/// short strings targeting rules compare.
fn contains(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    if h.len() > 256 || n.len() > h.len() {
        return n.len() <= h.len() && hay.contains(needle);
    }
    let first = n[0];
    (0..=h.len() - n.len()).any(|i| h[i] == first && &h[i..i + n.len()] == n)
}

fn in_set<'a>(b: &'a (Node, HashSet<Box<str>, FxBuild>), env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
    if let Some(s) = b.0.str_fast(env, scope) {
        return Ok(b.1.contains(s));
    }
    Ok(b.0.value(env, scope)?.as_str().is_some_and(|s| b.1.contains(s)))
}

fn str_cmp<'a>(op: StrOp, ab: &'a [Node; 2], env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
    let test = |a: &str, b: &str| match op {
        StrOp::StartsWith => a.starts_with(b),
        StrOp::EndsWith => a.ends_with(b),
    };
    if let (Some(a), Some(b)) = (ab[0].str_fast(env, scope), ab[1].str_fast(env, scope)) {
        return Ok(test(a, b));
    }
    let a = ab[0].value(env, scope)?;
    let b = ab[1].value(env, scope)?;
    let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else { return Err(Abort) };
    Ok(test(a, b))
}

impl SemVerNode {
    fn eval<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<bool> {
        let v;
        let mut buf = StackStr::new();
        let text = match self.version.str_fast(env, scope) {
            Some(s) => s,
            None => {
                v = self.version.value(env, scope)?;
                version_text(&v, &mut buf)?
            }
        };
        let version = Version::parse(text).ok_or(Abort)?;
        Ok(match &self.target {
            SemVerTarget::Literal(t) => self.op.apply(&version, &t.as_version()),
            SemVerTarget::Expr(n) => {
                let t = n.value(env, scope)?;
                let mut tbuf = StackStr::new();
                let target = Version::parse(version_text(&t, &mut tbuf)?).ok_or(Abort)?;
                self.op.apply(&version, &target)
            }
        })
    }
}

/// The text `sem_ver` parses: a string, or the decimal form of a number.
fn version_text<'v>(v: &'v Val<'_>, buf: &'v mut StackStr) -> R<&'v str> {
    match v {
        Val::Str(s) => Ok(s),
        Val::String(s) => Ok(s),
        Val::Num(n) => {
            write_js_number(buf, *n).map_err(|_| Abort)?;
            Ok(buf.as_str())
        }
        _ => Err(Abort),
    }
}

fn missing<'a>(keys: &[Val<'a>], env: &Env<'a>, scope: Scope<'_, 'a>) -> Vec<Val<'a>> {
    let mut out = Vec::new();
    for k in keys {
        let mut text = String::new();
        k.write_js(&mut text, true);
        let v = lookup(&parse_path(&text), env, scope);
        let absent = match &v {
            Val::Null => true,
            other => other.as_str() == Some(""),
        };
        if absent {
            out.push(k.clone());
        }
    }
    out
}

/// JavaScript ToIntegerOrInfinity, clamped to i64.
fn to_integer(n: f64) -> i64 {
    if n.is_nan() { 0 } else { n.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64 }
}

/// json-logic-js `substr`: JavaScript `String.prototype.substr`, plus a
/// negative length meaning "drop this many characters from the end".
fn substr(source: &str, start: i64, len: Option<i64>) -> String {
    let chars: Vec<char> = source.chars().collect();
    let size = chars.len() as i64;
    let from = if start < 0 { (size + start).max(0) } else { start.min(size) };
    let to = match len {
        None => size,
        Some(l) if l < 0 => (size + l).max(from),
        Some(l) => (from.saturating_add(l)).min(size),
    };
    if to <= from {
        return String::new();
    }
    chars[from as usize..to as usize].iter().collect()
}

impl FracNode {
    fn eval<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<Val<'a>> {
        let (hash, lead) = self.bucket_hash(env, scope)?;
        let variant = match (&self.fixed, lead) {
            (Some(fixed), None) if fixed.total == 0 => return Err(Abort),
            (Some(fixed), None) => {
                let index = match self.bucketing {
                    Bucketing::V1 => v1_select(hash, fixed.ends.iter().copied(), u64::from(fixed.total)),
                    Bucketing::V2 | Bucketing::V3 => {
                        let b = bucket(hash, fixed.total);
                        fixed.ends.iter().position(|end| b < *end)
                    }
                };
                match index {
                    Some(i) => self.entries[i].variant.value(env, scope)?,
                    // v1 only: a hash of i32::MIN lands past 100%, where flagd answered "".
                    None => Val::String(Box::default()),
                }
            }
            (_, lead) => self.select_dynamic(hash, lead, env, scope)?,
        };
        match variant {
            Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_) | Val::String(_) => Ok(variant),
            _ => Err(Abort),
        }
    }

    /// Weights computed by rules, or an entry computed by the first argument: evaluate, then
    /// select.
    fn select_dynamic<'a>(
        &'a self,
        hash: u32,
        lead: Option<Val<'a>>,
        env: &Env<'a>,
        scope: Scope<'_, 'a>,
    ) -> R<Val<'a>> {
        // The entry the first argument returned, as flagd reads an entry: [variant, weight?].
        let lead = match &lead {
            Some(arr) => {
                let items = arr.array_items();
                let (variant, weight) = match items.as_slice() {
                    [v] => (v.clone(), 1),
                    [v, w] => (v.clone(), runtime_weight(w)?),
                    _ => return Err(Abort),
                };
                Some((variant, weight))
            }
            None => None,
        };
        let n = self.entries.len() + usize::from(lead.is_some());
        let mut stack = [0u32; STACK_ENTRIES];
        let mut heap = Vec::new();
        let weights: &mut [u32] = if n <= STACK_ENTRIES {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        let skip = usize::from(lead.is_some());
        let mut total: u64 = 0;
        if let Some((_, w)) = &lead {
            weights[0] = *w;
            total += u64::from(*w);
        }
        for (w, e) in weights[skip..].iter_mut().zip(&self.entries) {
            *w = match &e.weight {
                Weight::Lit(x) => *x,
                Weight::Expr(node) => runtime_weight(&node.eval(env, scope)?)?,
            };
            total += u64::from(*w);
        }
        if total == 0 || total > i32::MAX as u64 {
            return Err(Abort);
        }
        let mut end = 0u64;
        let ends = weights.iter().map(|w| {
            end += u64::from(*w);
            end
        });
        let index = match self.bucketing {
            Bucketing::V1 => v1_select(hash, ends, total),
            Bucketing::V2 | Bucketing::V3 => {
                let b = bucket(hash, total as u32);
                ends.into_iter().position(|e| b < e)
            }
        };
        match (index, lead) {
            (None, _) => Ok(Val::String(Box::default())),
            (Some(0), Some((variant, _))) => Ok(variant),
            (Some(i), _) => self.entries[i - skip].variant.value(env, scope),
        }
    }

    /// The hash of the bucketing value, and the entry the first argument returned when it
    /// returned an array (an entry, in flagd's reading; the default bucketing value is used).
    fn bucket_hash<'a>(&'a self, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<(u32, Option<Val<'a>>)> {
        let Some(node) = &self.bucket_by else { return Ok((self.default_hash(env)?, None)) };
        if self.bucketing == Bucketing::V3 {
            return self.hash_v3(node, env, scope);
        }
        // v1, v2: the UTF-8 bytes of a string, streamed.
        if let Node::Cat(parts) = node {
            let mut h = Murmur3::new();
            write_cat(parts, env, scope, &mut h)?;
            return Ok((h.finish(), None));
        }
        if let Some(s) = node.str_fast(env, scope) {
            return Ok((murmur3_x86_32(s.as_bytes()), None));
        }
        match node.value(env, scope)? {
            Val::Str(s) => Ok((murmur3_x86_32(s.as_bytes()), None)),
            Val::String(s) => Ok((murmur3_x86_32(s.as_bytes()), None)),
            // flagd v2 drops a null first argument and buckets by the targeting key.
            Val::Null => Ok((self.default_hash(env)?, None)),
            arr @ (Val::Json(Value::Array(_)) | Val::List(_)) => Ok((self.default_hash(env)?, Some(arr))),
            _ => Err(Abort),
        }
    }

    /// v3: the hash of the deterministic CBOR encoding of the bucketing value.
    fn hash_v3<'a>(&'a self, node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> R<(u32, Option<Val<'a>>)> {
        let mut h = Murmur3::new();
        if let Node::Cat(parts) = node {
            // A text string's head holds its length: count first, then stream.
            let mut len = Counter(0);
            write_cat(parts, env, scope, &mut len)?;
            cbor::head(&mut h, 3, len.0 as u64);
            write_cat(parts, env, scope, &mut h)?;
            return Ok((h.finish(), None));
        }
        if let Some(s) = node.str_fast(env, scope) {
            cbor::text(&mut h, s);
            return Ok((h.finish(), None));
        }
        // A context attribute is encoded from its JSON, so integers beyond 2^53 stay exact.
        if let Some(v) = root_json(node, env, scope) {
            return match v {
                Value::Null => Err(Abort),
                Value::Array(_) => Ok((self.default_hash(env)?, Some(Val::Json(v)))),
                other => {
                    cbor::json(&mut h, other);
                    Ok((h.finish(), None))
                }
            };
        }
        match node.value(env, scope)? {
            Val::Null => Err(Abort),
            arr @ (Val::Json(Value::Array(_)) | Val::List(_)) => Ok((self.default_hash(env)?, Some(arr))),
            other => {
                cbor::val(&mut h, &other);
                Ok((h.finish(), None))
            }
        }
    }

    /// The hash of the default bucketing value. Needs a targeting key: a non-empty string.
    fn default_hash(&self, env: &Env<'_>) -> R<u32> {
        let key = env.ctx.targeting_key.as_deref().filter(|k| !k.is_empty()).ok_or(Abort)?;
        let mut h = Murmur3::new();
        if self.bucketing == Bucketing::V3 {
            cbor::array_head(&mut h, 2);
            cbor::text(&mut h, env.flag_key);
            cbor::text(&mut h, key);
        } else {
            h.write(env.flag_key.as_bytes());
            h.write(key.as_bytes());
        }
        Ok(h.finish())
    }
}

/// v1 (flagd core before v0.15): the hash as a signed 32-bit integer, `|h| / i32::MAX * 100`,
/// against the running sum of each entry's percentage, in doubles, exactly as flagd computed it.
fn v1_select(hash: u32, ends: impl IntoIterator<Item = u64>, total: u64) -> Option<usize> {
    let ratio = f64::from(hash as i32).abs() / f64::from(i32::MAX);
    let b = ratio * 100.0;
    let mut range_end = 0.0f64;
    let mut prev = 0u64;
    for (i, end) in ends.into_iter().enumerate() {
        let w = end - prev;
        prev = end;
        range_end += if total == 0 { 0.0 } else { 100.0 * w as f64 / total as f64 };
        if b < range_end {
            return Some(i);
        }
    }
    None
}

/// Counts the bytes written through `fmt::Write`.
/// Streams a concatenation's parts into `out` as the string they join into, without building it.
fn write_cat<'a, W: std::fmt::Write>(parts: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>, out: &mut W) -> R<()> {
    for p in parts {
        match p.str_fast(env, scope) {
            Some(s) => {
                let _ = out.write_str(s);
            }
            None => p.value(env, scope)?.write_js(out, true),
        }
    }
    Ok(())
}

struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// The JSON value a plain `var` names in the root context, when it names an attribute.
fn root_json<'a>(node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<&'a Value> {
    let Node::Var(v) = node else { return None };
    if scope.0.is_some() || v.default.is_some() {
        return None;
    }
    let VarPath::Static(p) = &v.path else { return None };
    if p.root != RootKind::Attr {
        return None;
    }
    match env.ctx.attribute(&p.segs[0].key).and_then(|x| walk_json(x, &p.segs[1..])) {
        Some(found) => Some(found),
        None => Some(&JSON_NULL),
    }
}

static JSON_NULL: Value = Value::Null;

/// Numbers as JsonLogic turns them into strings (for variant names).
pub(crate) fn number_text(n: f64, buf: &mut StackStr) -> Option<&str> {
    write_js_number(buf, n).ok()?;
    Some(buf.as_str())
}
