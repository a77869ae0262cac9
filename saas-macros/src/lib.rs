//! Procedural macros for saas-rs.
//!
//! - [`TenantScoped`](derive@TenantScoped): tenant-owned rows with tenant-safe store methods.
//! - [`require_permission`](macro@require_permission): a handler that only a signed-in user
//!   with a permission reaches (saas-auth).
//! - [`DomainEvent`](derive@DomainEvent): a typed event with its versioned name, context
//!   (topic), tenant and subject.

use proc_macro::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

/// Implements `saas_core::db::TenantScoped` for a struct of tenant-owned rows.
///
/// The struct needs a `tenant_id: TenantId` field and a key field: `id`, or the field marked
/// `#[tenant_scoped(key)]`. The table is named by `#[tenant_scoped(table = "…")]`. Every
/// other field is a column of the same name; its type must be one sqlx's `Any` driver reads
/// and writes (`String`, `i64`, `f64`, `bool`, `Option` of those, saas ids). Declare `bool`
/// columns `BOOLEAN` on PostgreSQL and `INTEGER` on SQLite.
///
/// ```
/// use saas_core::{db::TenantScoped, id::TenantId};
/// use saas_macros::TenantScoped;
///
/// saas_core::define_id!(NoteId, "note", "A note.");
///
/// #[derive(TenantScoped)]
/// #[tenant_scoped(table = "notes")]
/// struct Note {
///     id: NoteId,
///     tenant_id: TenantId,
///     body: String,
///     pinned: bool,
/// }
///
/// assert_eq!(Note::TABLE, "notes");
/// assert_eq!(Note::COLUMNS, ["body", "pinned"]);
/// ```
///
/// A struct without a tenant is refused at compile time:
///
/// ```compile_fail
/// #[derive(saas_macros::TenantScoped)]
/// #[tenant_scoped(table = "notes")]
/// struct Note { id: String, body: String }
/// ```
#[proc_macro_derive(TenantScoped, attributes(tenant_scoped))]
pub fn derive_tenant_scoped(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    tenant_scoped(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// The `saas_core::db::scoped` function that reads a column of type `ty`: booleans need
/// their own, because SQLite stores them as integers.
fn reader(ty: &syn::Type) -> proc_macro2::Ident {
    let name = match quote!(#ty).to_string().replace(' ', "").as_str() {
        "bool" => "bool_column",
        "Option<bool>" => "optional_bool_column",
        _ => "column",
    };
    proc_macro2::Ident::new(name, proc_macro2::Span::call_site())
}

fn tenant_scoped(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let mut table = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("tenant_scoped")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("table") {
                table = Some(meta.value()?.parse::<LitStr>()?.value());
                Ok(())
            } else {
                Err(meta.error("expected `table = \"…\"`"))
            }
        })?;
    }
    let table = table.ok_or_else(|| syn::Error::new_spanned(name, "add #[tenant_scoped(table = \"…\")]"))?;
    if !table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || table.is_empty() {
        return Err(syn::Error::new_spanned(name, "the table name may hold only letters, digits and `_`"));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(name, "TenantScoped is derived for structs with named fields"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(name, "TenantScoped is derived for structs with named fields"));
    };

    let mut key = None;
    let mut tenant = None;
    let mut columns = Vec::new();
    let mut readers = Vec::new();
    for field in &fields.named {
        let ident = field.ident.clone().expect("named field");
        let mut marked_key = false;
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("tenant_scoped")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("key") {
                    marked_key = true;
                    Ok(())
                } else {
                    Err(meta.error("expected `key`"))
                }
            })?;
        }
        if ident == "tenant_id" {
            tenant = Some(ident);
        } else if marked_key {
            if key.is_some() {
                return Err(syn::Error::new_spanned(field, "only one field can be the key"));
            }
            key = Some(ident);
        } else {
            readers.push(reader(&field.ty));
            columns.push(ident);
        }
    }
    if tenant.is_none() {
        return Err(syn::Error::new_spanned(name, "a tenant-scoped struct needs a `tenant_id: TenantId` field"));
    }
    let key = match key {
        Some(key) => key,
        None => {
            let at = columns.iter().position(|c| c == "id").ok_or_else(|| {
                syn::Error::new_spanned(name, "no key: add an `id` field or mark one #[tenant_scoped(key)]")
            })?;
            readers.remove(at);
            columns.remove(at)
        }
    };
    let key_name = key.to_string();
    let column_names: Vec<String> = columns.iter().map(ToString::to_string).collect();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::saas_core::db::TenantScoped for #name #ty_generics #where_clause {
            const TABLE: &'static str = #table;
            const KEY: &'static str = #key_name;
            const COLUMNS: &'static [&'static str] = &[#(#column_names),*];

            fn tenant_id(&self) -> ::saas_core::id::TenantId {
                self.tenant_id
            }

            fn key(&self) -> ::std::string::String {
                ::std::string::ToString::to_string(&self.#key)
            }

            fn bind_columns<'q>(&'q self, query: ::saas_core::db::scoped::AnyQuery<'q>) -> ::saas_core::db::scoped::AnyQuery<'q> {
                query #(.bind(&self.#columns))*
            }

            fn from_row(
                row: &::saas_core::reexport::sqlx::any::AnyRow,
            ) -> ::std::result::Result<Self, ::saas_core::reexport::sqlx::Error> {
                ::std::result::Result::Ok(Self {
                    tenant_id: ::saas_core::db::scoped::column(row, "tenant_id")?,
                    #key: ::saas_core::db::scoped::column(row, #key_name)?,
                    #(#columns: ::saas_core::db::scoped::#readers(row, #column_names)?,)*
                })
            }
        }
    })
}

/// Lets only signed-in users with a permission reach an axum handler: 401 without a valid
/// token, 403 `permission_denied` without the permission (saas-auth's RBAC).
///
/// ```ignore
/// #[require_permission("invoices:write")]
/// async fn create_invoice(principal: Principal, Json(new): Json<NewInvoice>) -> Result<Json<Invoice>> {
///     Ok(Json(invoices.create(principal.tenant, new).await?))
/// }
/// ```
///
/// It adds a first parameter, `saas_auth::rbac::Permitted<…>`, that checks the request's
/// `Principal` before any other extractor runs. The permission is checked for its form
/// (`resource:action` of `a-z`, `0-9`, `_`, `-`) at compile time. saas-auth's
/// `tests/rbac.rs` shows it on real routes.
#[proc_macro_attribute]
pub fn require_permission(attr: TokenStream, item: TokenStream) -> TokenStream {
    let permission = parse_macro_input!(attr as LitStr);
    let mut function = parse_macro_input!(item as syn::ItemFn);
    let name = permission.value();
    let part = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if !name.split_once(':').is_some_and(|(r, a)| part(r) && part(a)) {
        return syn::Error::new_spanned(permission, "expected a permission `resource:action` (a-z, 0-9, `_`, `-`)")
            .into_compile_error()
            .into();
    }
    if function.sig.asyncness.is_none() {
        return syn::Error::new_spanned(&function.sig, "#[require_permission] goes on an async handler")
            .into_compile_error()
            .into();
    }
    let marker =
        proc_macro2::Ident::new(&format!("__RequirePermission_{}", function.sig.ident), function.sig.ident.span());
    let argument: syn::FnArg = syn::parse_quote!(_: ::saas_auth::rbac::Permitted<#marker>);
    function.sig.inputs.insert(0, argument);
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #marker;
        impl ::saas_auth::rbac::PermissionName for #marker {
            const NAME: &'static str = #name;
        }
        #function
    }
    .into()
}

/// Implements `saas_core::events::DomainEvent` for a struct that is the data of one event.
///
/// `#[event(name = "context.event_name", version = N)]` names it (lowercase, the context
/// first; the type becomes `context.event_name.vN`). Mark the tenant field
/// `#[event(tenant)]` (`TenantId` or `Option<TenantId>`; without one the event is a platform
/// event) and, optionally, the subject field `#[event(subject)]` (any `Display`, or an
/// `Option` of one). The struct must also derive `Serialize`, `Deserialize` and
/// `schemars::JsonSchema`. See `saas_core::events::DomainEvent` for an example.
///
/// A name without a context, or version 0, is refused at compile time:
///
/// ```compile_fail
/// #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, saas_macros::DomainEvent)]
/// #[event(name = "no_context", version = 0)]
/// struct Bad { n: u32 }
/// ```
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    domain_event(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

fn domain_event(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let (mut name, mut version) = (None::<LitStr>, None::<syn::LitInt>);
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("version") {
                version = Some(meta.value()?.parse()?);
            } else {
                return Err(meta.error("expected `name = \"context.event\"` or `version = N`"));
            }
            Ok(())
        })?;
    }
    let span = proc_macro2::Span::call_site();
    let name = name.ok_or_else(|| syn::Error::new(span, "missing #[event(name = \"context.event\", version = N)]"))?;
    let version = version.ok_or_else(|| syn::Error::new(span, "missing `version = N` in #[event(...)]"))?;
    let text = name.value();
    let valid = text.split_once('.').is_some_and(|(context, event)| {
        let word =
            |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        word(context) && event.split('.').all(word)
    });
    if !valid {
        return Err(syn::Error::new(name.span(), "expected `context.event_name`: lowercase words, the context first"));
    }
    if version.base10_parse::<u32>()? == 0 {
        return Err(syn::Error::new(version.span(), "versions start at 1"));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(span, "DomainEvent is derived for structs"));
    };
    let marked = |what: &str| -> syn::Result<Option<&syn::Field>> {
        let mut found = None;
        for field in &data.fields {
            for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident(what) {
                        found = Some(field);
                    } else if !(meta.path.is_ident("tenant") || meta.path.is_ident("subject")) {
                        return Err(meta.error("expected `tenant` or `subject`"));
                    }
                    Ok(())
                })?;
            }
        }
        Ok(found)
    };
    let is_option = |field: &syn::Field| match &field.ty {
        syn::Type::Path(path) => path.path.segments.last().is_some_and(|s| s.ident == "Option"),
        _ => false,
    };
    let tenant = match marked("tenant")? {
        Some(field) => {
            let ident = &field.ident;
            if is_option(field) { quote!(self.#ident) } else { quote!(::std::option::Option::Some(self.#ident)) }
        }
        None => quote!(::std::option::Option::None),
    };
    let subject = match marked("subject")? {
        Some(field) => {
            let ident = &field.ident;
            if is_option(field) {
                quote!(self.#ident.as_ref().map(::std::string::ToString::to_string))
            } else {
                quote!(::std::option::Option::Some(::std::string::ToString::to_string(&self.#ident)))
            }
        }
        None => quote!(::std::option::Option::None),
    };
    let ty = &input.ident;
    Ok(quote! {
        impl ::saas_core::events::DomainEvent for #ty {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;

            fn tenant(&self) -> ::std::option::Option<::saas_core::id::TenantId> {
                #tenant
            }

            fn subject(&self) -> ::std::option::Option<::std::string::String> {
                #subject
            }
        }
    })
}
